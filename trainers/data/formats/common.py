"""What every converter shares: the error type, reading record files, validating each built row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..schema import TrajectoryValidationError, validate_row


class ConversionError(ValueError):
    """A source record cannot be converted. The message names the source, record index and field."""

    def __init__(self, index: int, field: str, problem: str, source: str | None = None):
        self.index, self.field, self.problem, self.source = index, field, problem, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}record {index}, field '{field}': {problem}")


# --------------------------------------------------------------------------------------------
# reading files


def read_json_records(path: str | Path) -> list[Any]:
    """Read records from a ``.json`` file (a list, or one record), a ``.jsonl`` file, or a folder
    of ``.json`` files (one record each, as ETO writes evaluation outputs; sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".json")
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .json files")
        records = []
        for file in files:
            record = _load_json(file)
            if isinstance(record, dict):
                record.setdefault("_file", file.stem)
            records.append(record)
        return records
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".jsonl":
        from ..hub_io import read_text_file

        records = []
        for number, line in enumerate(read_text_file(path).splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        return records
    data = _load_json(path)
    return data if isinstance(data, list) else [data]


def _load_json(file: Path) -> Any:
    from ..hub_io import read_text_file

    try:
        return json.loads(read_text_file(file))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}, line {error.lineno}: not valid JSON ({error.msg})") from error


def _finish(rows: list[dict], index: int, source: str | None) -> None:
    """Validate the row just built so that errors name the source record, not a later row number."""
    try:
        validate_row(rows[-1], index)
    except TrajectoryValidationError as error:
        raise ConversionError(index, error.field, error.problem, source) from error


__all__ = ["ConversionError", "read_json_records"]
