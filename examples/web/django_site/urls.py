from django.urls import path

from .views import summarise_view

urlpatterns = [path("summarise", summarise_view)]
