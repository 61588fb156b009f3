"""Web services that publish Celery work for their users, one per framework."""
