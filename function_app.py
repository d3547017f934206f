"""Azure Functions entry point: registers the blueprints and nothing else."""

import azure.functions as func

from shared.http_api import blueprint as http_blueprint

app = func.FunctionApp()
app.register_functions(http_blueprint)
