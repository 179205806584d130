"""The supervisors' side: the JSON API (`api`) and the admin site under /admin (`site`)."""
