"""Development tools (emulators, sandbox helpers); not part of the deployed function app."""
