"""The supervisors' side: the JSON API now, the admin site later."""
