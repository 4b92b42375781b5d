"""What counts as an outage: the tracking store is away for now, and sending again later will work.

Connection refused or reset, a timeout, an HTTP 5xx or 429 answer, a database that is locked or
unreachable. Anything else (a record refused for its content, a wrong password, a file that is gone,
a bug) is not an outage: waiting would not help, so it is reported with its cause at once.
"""

import requests
import sqlalchemy
from mlflow.exceptions import MlflowException, RestException

from emo import first_line

RETRIED_STATUSES = {429} | set(range(500, 600))


def causes(error: BaseException):
    """The error and the errors it was raised from or while handling."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_outage(error: BaseException) -> bool:
    for cause in causes(error):
        if isinstance(
            cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError | TimeoutError
        ):
            return True
        if isinstance(cause, sqlalchemy.exc.OperationalError):  # a database store that is locked or unreachable
            return True
        if isinstance(cause, RestException):  # the server answered
            return cause.get_http_status_code() in RETRIED_STATUSES
        if isinstance(cause, MlflowException) and "Max retries exceeded" in str(cause):  # MLflow's own retries gave up
            return True
    return False


def described(error: BaseException) -> str:
    """`Type: first line`: an error of the tracking server's, as a warning names it."""
    return f"{type(error).__name__}: {first_line(error)}"
