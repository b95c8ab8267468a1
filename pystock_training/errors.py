"""Errors the pipeline reports as one line and a non-zero exit, without a traceback."""


class PystockError(Exception):
    """An expected failure whose message alone tells the user what is wrong."""


class DataError(PystockError):
    """The input data file breaks the data contract; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
