"""`sam auto`: placeholder replaced below."""
