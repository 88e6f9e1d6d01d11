"""InstructLab taxonomy qna.yaml, schema versions 2 and 3, skills and knowledge.

The YAML is parsed without aliases (they can expand a small file into billions of values),
and every error names the line of the YAML node it is about: constructed values carry no
lines, so the node tree is kept beside them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from evoinstruct.store.errors import InputError
from evoinstruct.store.records import ExampleDraft
from evoinstruct.store.seed_fields import misspelling_of
from evoinstruct.store.seeds.errors import (
    _SURROGATE,
    QnaPath,
    _brief,
    _dotted,
    _path_text,
    _surrogate_message,
    _too_deep,
)
from evoinstruct.store.seeds.limits import MAX_QNA_BYTES, _size, _too_big
from evoinstruct.store.seeds.reading import _line_at

QNA_VERSIONS = (2, 3)


class _Qna:
    """Errors for one qna document, each with the line of the YAML node it is about."""

    def __init__(self, path: Path, root: Any) -> None:
        self.path = path
        self.root = root  # the yaml.compose node tree: safe_load's values carry no lines

    def node(self, at: QnaPath) -> Any:
        """The deepest node on `at` that exists (a missing key reports its mapping's line)."""
        import yaml

        node = self.root
        for step in at:
            if isinstance(node, yaml.SequenceNode) and isinstance(step, int):
                if step >= len(node.value):
                    break
                node = node.value[step]
            elif isinstance(node, yaml.MappingNode) and isinstance(step, str):
                found = [v for k, v in node.value if _scalar(k) == step]
                if not found:
                    break
                node = found[-1]  # PyYAML keeps the last of duplicate keys
            else:
                break
        return node

    def fail(self, at: QnaPath, message: str) -> InputError:
        node = self.node(at)
        line = node.start_mark.line + 1 if node is not None else None
        return InputError(message, file=str(self.path), line=line, field=_dotted(at) or None)

    def mapping(self, at: QnaPath, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(at, f"expected a mapping with {', '.join(allowed)}")
        # The upstream schema refuses unknown keys too; a typo such as `contxt:` would
        # otherwise drop the context without a word.
        for key in value:
            if key not in allowed:
                near = misspelling_of(str(key), allowed)
                guess = f": did you mean {near!r}?" if near is not None else ""
                raise self.fail(
                    (*at, str(key)),
                    f"unknown key {key!r}{guess} (expected {', '.join(allowed)})",
                )
        self.unique_keys(at)
        return value

    def unique_keys(self, at: QnaPath) -> None:
        """Refuse a key given twice: safe_load would silently keep only the last value."""
        import yaml

        node = self.node(at)
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            key = _scalar(key_node)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(
                    f"key {key!r} appears twice (first on line {seen[key]})",
                    file=str(self.path),
                    line=line,
                    field=_dotted((*at, key)),
                )
            seen[key] = line

    def string(self, at: QnaPath, obj: dict[str, Any], *, required: bool) -> str:
        key = str(at[-1])
        if key not in obj:
            if required:
                raise self.fail(at, "missing")
            return ""
        value = obj[key]
        if value is None:
            raise self.fail(at, "empty (the key has no value)")
        if not isinstance(value, str):
            # YAML turns unquoted `yes`, `42` or `2024-01-01` into bool, int or date.
            raise self.fail(
                at, f"expected a string, found {type(value).__name__} (quote the value)"
            )
        if not value.strip():
            raise self.fail(at, "empty")
        if found := _SURROGATE.search(value):  # from a "\ud800" escape
            raise self.fail(at, _surrogate_message(found.group()))
        if _too_big(value):
            raise self.fail(at, "value is larger than 1 MiB")
        return value.strip()


def _scalar(node: Any) -> str | None:
    import yaml

    return node.value if isinstance(node, yaml.ScalarNode) else None


class _YamlAlias(Exception):
    def __init__(self, anchor: str, line: int) -> None:
        super().__init__(anchor)
        self.anchor = anchor
        self.line = line


@functools.cache
def _strict_yaml_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases: safe_load shares each aliased value, but whatever walks
        the result (or a merge key, which copies) expands nine lines of anchors and aliases
        into a billion values (billion laughs). A qna file has no use for them."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _YamlAlias(event.anchor, event.start_mark.line + 1)
            return super().compose_node(parent, index)

        def construct_yaml_int(self, node: Any) -> int:
            try:
                return super().construct_yaml_int(node)
            except ValueError:  # more digits than int() converts: a plain ValueError
                raise yaml.constructor.ConstructorError(
                    None, None, "a number too long to read; quote it", node.start_mark
                ) from None

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def _load_yaml(path: Path, text: str) -> tuple[Any, Any]:
    """The document and its node tree (for line numbers: constructed values carry none)."""
    import yaml

    if len(text) > MAX_QNA_BYTES:  # characters: a cheap lower bound of the bytes
        raise InputError(
            f"a qna.yaml larger than {_size(MAX_QNA_BYTES)}: too slow to parse as YAML "
            "(an InstructLab qna file holds a few seed examples); split it",
            file=str(path),
        )
    loader = None
    try:
        loader = _strict_yaml_loader()(text)  # checks every character: it raises too
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except _YamlAlias as exc:
        raise InputError(
            f"YAML alias *{exc.anchor}: aliases are not accepted in a seed file (they can "
            "expand a small file into billions of values); write the value out",
            file=str(path),
            line=exc.line,
        ) from None
    except RecursionError:
        mark = loader.get_mark() if loader is not None else None
        raise _too_deep(path, mark.line + 1 if mark is not None else None) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            detail += f" ({exc.context}, which starts on line {exc.context_mark.line + 1})"
        line = mark.line + 1 if mark is not None else None
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise InputError(f"invalid YAML{column}: {detail}", file=str(path), line=line) from None
    except yaml.YAMLError as exc:  # ReaderError: a control character, reported by position
        position = getattr(exc, "position", None)
        line = _line_at(text, position) if isinstance(position, int) else None
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise InputError(f"invalid YAML: {first}", file=str(path), line=line) from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_qna(path: Path, text: str) -> tuple[list[ExampleDraft], int]:
    """InstructLab taxonomy qna.yaml, schema versions 2 and 3, skills and knowledge.

    Skills (and version 2 knowledge): seed_examples[i] = {question, answer, context?}.
    Version 3 knowledge (it has `document`/`document_outline`):
    seed_examples[i] = {context, questions_and_answers: [{question, answer}]}.
    Each question/answer becomes one example: instruction=question, input=context,
    output=answer; meta names the file and the 0-based positions they came from.
    """
    doc, root = _load_yaml(path, text)
    qna = _Qna(path, root)
    if not isinstance(doc, dict):
        shape = "empty" if doc is None else f"a {type(doc).__name__}"
        raise qna.fail(
            (),
            f"not an InstructLab qna document: the top level is {shape}, "
            "not a mapping with seed_examples",
        )
    if "seed_examples" not in doc:
        keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
        raise InputError(
            f"not an InstructLab qna document: no top-level seed_examples (found keys: {keys})",
            file=str(path),
            line=1,
            field="seed_examples",
        )
    qna.unique_keys(())
    version = doc.get("version")
    if version is None:
        raise qna.fail(("version",), f"missing (this reader knows qna versions {QNA_VERSIONS})")
    if not isinstance(version, int) or isinstance(version, bool) or version not in QNA_VERSIONS:
        raise qna.fail(("version",), f"expected one of {QNA_VERSIONS}, found {_brief(version)}")
    examples = doc["seed_examples"]
    if not isinstance(examples, list) or not examples:
        raise qna.fail(("seed_examples",), "expected a non-empty list of seed examples")
    knowledge_v3 = version == 3 and ("document" in doc or "document_outline" in doc)
    kind = "knowledge" if "document" in doc or "document_outline" in doc else "skill"
    seed_file = _path_text(path)
    drafts = []
    for i, example in enumerate(examples):
        at: QnaPath = ("seed_examples", i)
        if knowledge_v3:
            obj = qna.mapping(at, example, ("context", "questions_and_answers"))
            context = qna.string((*at, "context"), obj, required=True)
            pairs = obj.get("questions_and_answers")
            if not isinstance(pairs, list) or not pairs:
                raise qna.fail(
                    (*at, "questions_and_answers"),
                    "expected a non-empty list of {question, answer}",
                )
            for j, pair in enumerate(pairs):
                inner: QnaPath = (*at, "questions_and_answers", j)
                pobj = qna.mapping(inner, pair, ("question", "answer"))
                question = qna.string((*inner, "question"), pobj, required=True)
                answer = qna.string((*inner, "answer"), pobj, required=True)
                meta = {"seed_file": seed_file, "qna_kind": kind, "qna_example": i, "qna_pair": j}
                drafts.append(ExampleDraft(question, context, answer, meta=meta))
        else:
            if isinstance(example, dict) and "questions_and_answers" in example:
                raise qna.fail(
                    (*at, "questions_and_answers"),
                    "only a version 3 knowledge document (with document and document_outline) "
                    "has questions_and_answers",
                )
            obj = qna.mapping(at, example, ("question", "answer", "context"))
            question = qna.string((*at, "question"), obj, required=True)
            answer = qna.string((*at, "answer"), obj, required=True)
            context = qna.string((*at, "context"), obj, required=False)
            meta = {"seed_file": seed_file, "qna_kind": kind, "qna_example": i}
            drafts.append(ExampleDraft(question, context, answer, meta=meta))
    return drafts, len(examples)
