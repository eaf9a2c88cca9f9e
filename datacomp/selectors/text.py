"""Selection inputs for instruction-tuning text: records from JSON / JSONL / parquet, and their embeddings.

Loading (:func:`load_text_dataset`) goes through Hugging Face ``datasets``: ``load_dataset("json", data_files=...)``
for ``.json`` / ``.jsonl`` files, ``load_dataset("parquet", ...)`` for ``.parquet``; a name that is not a local file
is loaded from the hub only when ``allow_hub=True`` (never implicitly). Fields are configurable: an *instruction*
field, an optional *input* field and an optional *output* field (default: Alpaca's ``instruction``, ``input``,
``output``). Each record is rendered to one text with :data:`ALPACA_TEMPLATE` (Alpaca's prompt format, without its
preamble sentence)::

    ### Instruction:
    {instruction}

    ### Input:            <- this block only when the input is non-empty
    {input}

    ### Response:
    {output}

or with a user ``template`` (``str.format`` placeholders ``{instruction}``, ``{input}``, ``{output}``). With a single
field the text is that field verbatim. Missing values (``None``) render as empty strings.

Embeddings of the texts: :mod:`datacomp.selectors.embeddings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datacomp.errors import ConfigError, DataError, MissingInputError

__all__ = [
    "ALPACA_FIELDS",
    "ALPACA_TEMPLATE",
    "TEXT_SUFFIXES",
    "TextDataset",
    "parse_fields",
    "is_text_source",
    "load_text_dataset",
    "render_records",
]

ALPACA_FIELDS: dict[str, str | None] = {"instruction": "instruction", "input": "input", "output": "output"}
ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
_ALPACA_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n{output}"
TEXT_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_ROLES = ("instruction", "input", "output")
_NONE_NAMES = ("", "-", "none", "None")


# --------------------------------------------------------------------------------------------- records


def parse_fields(fields: Sequence[str | None] | Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Normalise a field specification to ``{"instruction": name, "input": name|None, "output": name|None}``.

    Accepted forms: ``None`` (Alpaca names); a mapping with the keys above; a sequence of 3 names
    ``(instruction, input, output)``, of 2 ``(instruction, output)`` or of 1 ``(text,)``. A name of ``None``,
    ``""`` or ``"-"`` means "no such field".
    """
    if fields is None:
        return dict(ALPACA_FIELDS)
    if isinstance(fields, str):
        raise ConfigError("fields must be a sequence of field names (e.g. ['instruction', 'input', 'output']), "
                        "not a single string")
    if isinstance(fields, Mapping):
        unknown = set(fields) - set(_ROLES)
        if unknown:
            raise ConfigError(f"fields has unknown roles {sorted(unknown)}; use {list(_ROLES)}")
        spec = {role: fields.get(role) for role in _ROLES}
    else:
        names = list(fields)
        if len(names) == 3:
            spec = dict(zip(_ROLES, names))
        elif len(names) == 2:
            spec = {"instruction": names[0], "input": None, "output": names[1]}
        elif len(names) == 1:
            spec = {"instruction": names[0], "input": None, "output": None}
        else:
            raise ConfigError(f"fields needs 1 to 3 names (instruction [input] [output]), got {len(names)}: {names}")
    spec = {role: (None if name is None or name in _NONE_NAMES else str(name)) for role, name in spec.items()}
    if spec["instruction"] is None:
        raise ConfigError("fields: the instruction field is required (the first name)")
    return spec


def render_records(records: Sequence[Mapping], fields: Mapping[str, str | None], template: str | None = None
                   ) -> list[str]:
    """One text per record (module docstring for the templates)."""
    def column(role: str) -> list[str]:
        name = fields.get(role)
        if name is None:
            return [""] * len(records)
        return ["" if r.get(name) is None else str(r.get(name)) for r in records]

    ins, inp, out = column("instruction"), column("input"), column("output")
    if template is not None:
        return [template.format(instruction=a, input=b, output=c) for a, b, c in zip(ins, inp, out)]
    if fields.get("input") is None and fields.get("output") is None:
        return ins
    if fields.get("output") is None:  # instruction (+ input) only: the prompt part
        return [f"### Instruction:\n{a}" + (f"\n\n### Input:\n{b}" if b.strip() else "") for a, b in zip(ins, inp)]
    return [ALPACA_TEMPLATE.format(instruction=a, input=b, output=c) if b.strip()
            else _ALPACA_NO_INPUT.format(instruction=a, output=c) for a, b, c in zip(ins, inp, out)]


@dataclass
class TextDataset:
    """Instruction records and their rendered texts.

    Attributes:
        name: file stem or hub name.
        records: the raw records (dicts with every column), in file order.
        fields: ``{"instruction", "input", "output"}`` -> column name or ``None``.
        source: where they came from (path or ``hub:NAME``).
        template: the user template, or ``None`` for :data:`ALPACA_TEMPLATE`.
        texts: rendered texts, one per record.
    """

    name: str
    records: list[dict]
    fields: dict[str, str | None]
    source: str
    template: str | None = None
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.texts:
            self.texts = render_records(self.records, self.fields, self.template)

    def __len__(self) -> int:
        return len(self.records)

    def column(self, role: str) -> list[str]:
        """Values of the field playing ``role`` (``instruction``/``input``/``output``) as strings."""
        name = self.fields.get(role)
        if name is None:
            raise ConfigError(f"the dataset has no {role} field (fields={self.fields})")
        return ["" if r.get(name) is None else str(r.get(name)) for r in self.records]

    def prompts(self) -> list[str]:
        """Instruction (+ input) part of each record, rendered without the response."""
        return render_records(self.records, {**self.fields, "output": None})

    def lengths(self, role: str | None = "output") -> np.ndarray:
        """Character counts of ``role``'s field (``None``: of the rendered texts). ``longest`` selects by these."""
        values = self.texts if role is None else self.column(role)
        return np.fromiter(map(len, values), dtype=np.float64, count=len(values))

    def info(self) -> dict:
        return {"name": self.name, "source": self.source, "num_records": len(self), "fields": dict(self.fields),
                "template": self.template or "alpaca"}


def is_text_source(name: str) -> bool:
    """True for ``text:...`` or a path ending in .json / .jsonl / .parquet."""
    return name.startswith("text:") or Path(name).suffix.lower() in TEXT_SUFFIXES


def load_text_dataset(
    source: str | os.PathLike,
    fields: Sequence[str | None] | Mapping[str, str | None] | None = None,
    *,
    template: str | None = None,
    split: str = "train",
    allow_hub: bool = False,
    cache_dir: str | None = None,
    progress: bool = True,
) -> TextDataset:
    """Load instruction records with Hugging Face ``datasets`` (module docstring).

    Args:
        source: ``PATH.json`` / ``PATH.jsonl`` / ``PATH.parquet`` (optionally prefixed ``text:``), or a hub name.
        fields: field specification (:func:`parse_fields`).
        template: optional ``str.format`` template with ``{instruction}``, ``{input}``, ``{output}``.
        split: split of a hub dataset (local files have one split, ``train``).
        allow_hub: allow loading a non-local name from the Hugging Face hub.
        cache_dir: ``datasets`` cache folder (default: its own).
        progress: show ``datasets``' progress bars.

    Raises:
        MissingInputError: a path-like source that does not exist.
        ConfigError: unsupported suffix, hub name without ``allow_hub``, a configured field missing from the data,
            a bad template.
        DataError: a file that does not parse, no records, or records whose text fields are all empty.
    """
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        return _load_text_dataset(source, parse_fields(fields), template, split, allow_hub, cache_dir)
    finally:
        if bars_were_on and not progress:
            datasets.enable_progress_bars()


def _load_text_dataset(source, spec: dict, template: str | None, split: str, allow_hub: bool,
                       cache_dir: str | None) -> TextDataset:
    import datasets

    raw = str(source)
    raw = raw[len("text:"):] if raw.startswith("text:") else raw
    path = Path(raw).expanduser()
    if path.is_file():
        builder = TEXT_SUFFIXES.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(f"text dataset {path}: unsupported file type {path.suffix!r}; use .json, .jsonl or "
                             ".parquet")
        try:
            hf = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
        except Exception as err:  # datasets raises its own error types for malformed files
            raise DataError(f"text dataset {path}: could not be parsed as {builder}: {err}") from err
        name, where = path.stem, str(path)
    elif path.suffix.lower() in TEXT_SUFFIXES or raw.startswith(("/", ".", "~")):  # a path, not a hub name
        raise MissingInputError(f"text dataset {path} does not exist (expected a .json, .jsonl or .parquet file)")
    elif not allow_hub:
        raise ConfigError(f"text dataset {raw!r} is not a local file; give a .json/.jsonl/.parquet path, or allow the "
                         "Hugging Face hub (allow_hub=True / --allow-hub) to download it")
    else:
        hf = datasets.load_dataset(raw, split=split, cache_dir=cache_dir)
        name, where = raw.replace("/", "__"), f"hub:{raw}"
    columns = list(hf.column_names)
    missing = {role: col for role, col in spec.items() if col is not None and col not in columns}
    if missing:
        hint = " (use '-' for the input field if the data has none)" if "input" in missing else ""
        raise ConfigError(f"text dataset {where}: field(s) {missing} not found; available columns: {columns}{hint}")
    if len(hf) == 0:
        raise DataError(f"text dataset {where} has no records")
    if template is not None:
        try:
            template.format(instruction="", input="", output="")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"template may only use {{instruction}}, {{input}} and {{output}}: {err!r}") from err
    records = hf.to_list()
    _check_not_empty(records, spec, where)
    return TextDataset(name, records, spec, where, template)


def _check_not_empty(records: list[dict], spec: dict, where: str) -> None:
    """Refuse records whose configured text fields are all empty (nothing to embed or measure)."""
    columns = [c for c in spec.values() if c is not None]
    for r in records:
        if any(str(r.get(c) or "").strip() for c in columns):
            return
    raise DataError(f"text dataset {where}: all {len(records)} records are empty in the fields {columns}; point "
                    "--text-fields (fields=) at the columns that hold the text")
