"""The function app's package: domain core, adapters and function blueprints."""
