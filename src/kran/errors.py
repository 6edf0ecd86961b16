"""The one exception root of kran.

KranError
 +-- InvalidInput        bad user input (HTTP 422, CLI exit 2)
 +-- Unauthorized        no or bad credentials (HTTP 401)
 +-- Forbidden           known caller, not allowed (HTTP 403; others' objects are NotFound)
 +-- NotFound            unknown object (HTTP 404)
 |    +-- Gone            it was there and was removed, e.g. expired job files (HTTP 410)
 +-- Conflict            the object is in a state that forbids the action (HTTP 409)
 |    +-- StaleState      a job moved on meanwhile: a compare-and-set changed nothing
 +-- QueueFull           the bounded queue is full (HTTP 429)
 +-- Unavailable         a needed component is down, e.g. no Docker Engine (HTTP 503)
 +-- StorageFull         the data dir or the store's disk is full: nothing was stored (HTTP 507)
 +-- IllegalTransition   a job state change not in the transition table (a bug)
 +-- EngineError         an engine could not do what was asked
      +-- EngineUnavailable  the engine (or the node) cannot be reached: not the job's fault
      +-- FetchError      a job's file could not be fetched (the URL and why)
      +-- RegistryError   a registry refused or could not be reached (the image and why)
"""


class KranError(Exception):
    """Root of every error kran raises on purpose."""


class InvalidInput(KranError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(KranError):
    pass


class Forbidden(KranError):
    pass


class NotFound(KranError):
    pass


class Gone(NotFound):
    pass


class Conflict(KranError):
    pass


class StaleState(Conflict):
    """A job state change found the job no longer in the state (or attempt) it was
    decided from: another writer moved it meanwhile. Nothing of the transaction was kept."""


class QueueFull(KranError):
    pass


class Unavailable(KranError):
    pass


class StorageFull(KranError):
    pass


class IllegalTransition(KranError):
    pass


class EngineError(KranError):
    pass


class EngineUnavailable(EngineError):
    pass


class FetchError(EngineError):
    pass


class RegistryError(EngineError):
    def __init__(self, message: str, answered: bool = True) -> None:
        super().__init__(message)
        self.answered = answered  # False: the registry could not be reached at all


class StepCancelled(KranError):
    """The workflow run a step belongs to was cancelled."""


# the HTTP status of each refusal, for the API and the web dashboard (most specific first)
HTTP_STATUS: dict[type[KranError], int] = {
    Gone: 410,
    InvalidInput: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    QueueFull: 429,
    Unavailable: 503,
    StorageFull: 507,
}


def http_status(exc: KranError) -> int:
    return next((code for cls, code in HTTP_STATUS.items() if isinstance(exc, cls)), 500)
