"""The scenario harness: the reference's incidents replayed against real Celery workers.

``celery-resilience simulate`` runs each scenario twice, with the plain example pipeline
and with the protected one, against fake services on loopback (``fake_server``), and
reports what users got. Needs the ``simulate`` extra (the ``openai`` client the example
pipeline calls with, and matplotlib for the chart).
"""
