"""Azure Functions entry point: registers the blueprints and nothing else."""

import azure.functions as func

from shared.http_api import blueprint as http_blueprint
from shared.queue_functions import blueprint as queue_blueprint
from shared.timer_functions import blueprint as timer_blueprint

app = func.FunctionApp()
app.register_functions(http_blueprint)
app.register_functions(queue_blueprint)
app.register_functions(timer_blueprint)
