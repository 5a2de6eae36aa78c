"""What app.py needs besides its layout: starting up (models, precision, queue), checking requests, streaming results."""
