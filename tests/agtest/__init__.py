"""Test support: run the real server in a subprocess and drive its forms over HTTP."""
