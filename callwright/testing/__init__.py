"""Stand-ins for what cannot run here (Twilio's cloud), strict about its documented formats.

Used by `callwright call`, by this project's tests and by users' own tests; never by a
server taking real calls.
"""
