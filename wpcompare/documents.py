"""Reading result documents that may come from anywhere: every bad file is one line.

A file is parsed with every number checked as it is read (finite, within 64 bits:
NaN, Infinity, 1e308 or a 400-digit integer are refused, so no renderer meets them),
nesting that would exhaust the parser's recursion is refused, and the document is
validated against the JSON Schema of its kind, shipped in wpcompare/schemas/
(`run-1`, `run-2`, `cycle-1`, `cycle-2`, `compare-1`). A gzipped file is read as its content
(recognised by its magic bytes, whatever its name). The schemas type every field wpcompare reads and
allow fields they do not list, so later versions may add some.
"""
import functools
import gzip
import io
import zlib
import json
import math
from importlib import resources

from wpcompare.errors import InvalidArgument

SCHEMA_FILES = {"wpcompare.run/1": "run-1.schema.json", "wpcompare.run/2": "run-2.schema.json",
                "wpcompare.cycle/1": "cycle-1.schema.json", "wpcompare.cycle/2": "cycle-2.schema.json",
                "wpcompare.compare/1": "compare-1.schema.json"}
GZIP_MAGIC = b"\x1f\x8b"
GZIP_EXPANSION_LIMIT = 256 << 20   # a result is a few MiB; a gzip bomb stops here, not at memory's end
LIMIT = 2 ** 64          # the widest value the C core writes (a u64 checksum)
_MESSAGE_CHARS = 120


class _Refused(ValueError):
    pass


def _integer(text):
    if len(text.lstrip("-")) > 20 or abs(int(text)) > LIMIT:
        raise _Refused(f"the number {text[:24]}{'...' if len(text) > 24 else ''} is beyond 64 bits")
    return int(text)


def _float(text):
    value = float(text)
    if not math.isfinite(value) or abs(value) > LIMIT:
        raise _Refused(f"the number {text[:24]} is beyond 64 bits")
    return value


def _constant(text):
    raise _Refused(f"{text} is not a number JSON allows")


# Fields whose values are u64 and may pass 2^53, past which JavaScript's and jq's numbers
# round: written as decimal strings (files written before were numbers; the schemas take both).
WIDE_FIELDS = ("checksum",)


def wide_integers_as_text(row):
    """row (a run's or a cycle's) with every WIDE_FIELDS integer as its decimal string."""
    return dict(row, **{name: str(row[name]) for name in WIDE_FIELDS if isinstance(row.get(name), int)})


def read_json(path):
    """The JSON value in the file at path, or InvalidArgument saying in one line why not."""
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}") from None
    if data.startswith(GZIP_MAGIC):     # saved results kept small, e.g. docs/results/data/
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as packed:
                data = packed.read(GZIP_EXPANSION_LIMIT + 1)
        except (OSError, EOFError, zlib.error) as error:
            raise InvalidArgument(f"{path} is not a wpcompare result: a damaged gzip file ({_short(str(error))})") from None
        if len(data) > GZIP_EXPANSION_LIMIT:
            raise InvalidArgument(f"{path} is not a wpcompare result: it expands beyond "
                                  f"{GZIP_EXPANSION_LIMIT >> 20} MiB once decompressed")
    try:
        return json.loads(data, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except _Refused as error:
        raise InvalidArgument(f"{path} is not a wpcompare result: {error}") from None
    except RecursionError:
        raise InvalidArgument(f"{path} is not a wpcompare result: nested too deeply") from None
    except ValueError as error:     # JSONDecodeError, UnicodeDecodeError
        raise InvalidArgument(f"{path} is not JSON: {_short(str(error))}") from None


@functools.lru_cache(maxsize=None)
def validator(schema):
    import jsonschema

    text = resources.files("wpcompare").joinpath("schemas", SCHEMA_FILES[schema]).read_text()
    document = json.loads(text)
    return jsonschema.Draft202012Validator(document)


def validate(path, document, expected):
    """document if it is valid under one of the expected schema names, else InvalidArgument."""
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema not in expected:
        raise InvalidArgument(f"{path} is not a wpcompare result: schema {_short(repr(schema))}, expected "
                              + " or ".join(repr(name) for name in expected))
    import jsonschema

    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(document))
    if error is not None:
        raise InvalidArgument(f"{path} is not a valid {schema} document: at {error.json_path}: "
                              f"{_short(error.message)}")
    where = _bad_bucket(document)
    if where:
        raise InvalidArgument(f"{path} is not a valid {schema} document: at {where}: "
                              "a histogram bucket is not [low_ns, high_ns, count] (integers >= 0)")
    return document


def _bad_bucket(document):
    """The JSON path of the first malformed histogram bucket, or None (histograms hold most
    of a document: checked here in a plain loop, 20x faster than through the schema)."""
    rows = [(f"$.runs[{i}]", row) for i, row in enumerate(document.get("runs", ()))]
    rows += [(f"$.chains[{i}].cycles[{j}]", cycle) for i, chain in enumerate(document.get("chains", ()))
             for j, cycle in enumerate(chain["cycles"])]
    for where, row in rows:
        for name, histogram in (row.get("histograms") or {}).items():
            for k, bucket in enumerate((histogram or {}).get("buckets", ())):
                if not (type(bucket) is list and len(bucket) == 3
                        and all(type(value) is int and value >= 0 for value in bucket)):
                    return f"{where}.histograms.{name}.buckets[{k}]"
    return None


def load(path, expected):
    return validate(path, read_json(path), expected)


def _short(text):
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS - 3] + "..."
