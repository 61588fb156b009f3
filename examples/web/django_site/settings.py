"""A minimal Django project whose views publish Celery work."""

SECRET_KEY = "example-only"
DEBUG = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.web.django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["celery_resilience.web.django.ResilienceMiddleware"]
# Who is calling: a real project keeps the default (the authenticated user's key).
RESILIENCE_USER_ID = "examples.web.django_site.views.user_of"
RESILIENCE_TIER = "examples.web.django_site.views.tier_of"
