"""Django: ``ResilienceMiddleware`` admits every request's publishes for its user.

DJANGO_SETTINGS_MODULE=examples.web.django_site.settings django-admin runserver
"""
