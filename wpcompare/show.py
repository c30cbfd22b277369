"""`wpcompare show RESULT.json`: a saved document of `run`, `cycle` or `compare`, rendered
again in any format its kind offers, without measuring.

The document is read as every command reads a file (wpcompare.documents: numbers checked,
validated against the JSON Schema of its version, old versions included), its derived
statistics computed again from the raw runs, then rendered by the kind that wrote it: so
`show` prints what the command printed, byte for byte, given the same format and columns.
"""
from wpcompare import compare, cycle_report, cycle_results, documents, report, results, sweep
from wpcompare.errors import InvalidArgument


def _load_run(path, document):
    return results.load_document(path, document)


def _load_cycle(path, document):
    return cycle_results.derive(documents.validate(path, document, cycle_results.READABLE_SCHEMAS))


def _load_compare(path, document):
    return documents.validate(path, document, (compare.SCHEMA,))


# Schema -> (its kind in the format registry, its loader).
KINDS = dict(
    [(schema, (report.KIND, _load_run)) for schema in results.READABLE_SCHEMAS]
    + [(schema, (cycle_report.KIND, _load_cycle)) for schema in cycle_results.READABLE_SCHEMAS]
    + [(compare.SCHEMA, (compare.KIND, _load_compare))])


def load(path):
    """(kind, document) of the result file at path, or InvalidArgument saying in one line why not."""
    document = documents.read_json(path)
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema not in KINDS:
        raise InvalidArgument(f"{path} is not a wpcompare result (schema {str(schema)[:40]!r}); "
                              "show reads the JSON of run, cycle and compare (-o FILE.json): "
                              + ", ".join(KINDS))
    kind, loader = KINDS[schema]
    document = loader(path, document)
    # A size sweep is a run document printed as run --size LIST prints it.
    if kind is report.KIND and sweep.is_sweep(document):
        kind = sweep.KIND
    return kind, document
