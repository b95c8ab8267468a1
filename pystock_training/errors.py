"""Errors the pipeline reports as one line and a non-zero exit, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's may run to pages), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PystockError(Exception):
    """An expected failure whose message alone tells the user what is wrong."""


class DataError(PystockError):
    """The input data file breaks the data contract; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised on a Dask worker, the error is pickled back to the client: rebuilt from both
        # arguments, not from the joined message.
        return (type(self), (self.path, self.problem))
