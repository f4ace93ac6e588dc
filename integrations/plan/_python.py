"""Python code as a plan source: Airflow DAG files and Prefect flows, read with ``ast``, never run.

Stages are named as the orchestrator names them at run time, so that a stage's policy is the
one its task asks for: Airflow ``DAG_ID/TASK_ID``; Prefect ``FLOW/TASK`` with Prefect's own
names (``@flow(name=...)``, else the function's name with ``_`` turned into ``-``, as Prefect
derives it; ``@task(name=...)``, else the function's name as it is) and ``FLOW`` for what a flow
reads itself. A task defined at module level is a stage of every flow (or DAG) that calls it,
directly or through other tasks (``t()``, ``t.submit()``, ``t.map()``,
``t.with_options(name=...)``), in any file planned with it (found by the name it is imported
under); a task no flow calls is planned under its own name, with a note. Prefect blocks loaded by
name (``SecretReference.load("openai")``) are recorded on the stage; what they reference is in
the Prefect API (:mod:`._prefect`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._exceptions import InvalidReference
from .._refs import parse
from ._prefect import BLOCK_TYPES
from ._sources import AirflowMapping, Stage, reference

__all__ = ["python_stages"]

_AIRFLOW_VARIABLE = {("Variable", "get")}
_AIRFLOW_CONNECTION = {("Connection", "get"), ("BaseHook", "get_connection")}
#: methods that run a task, or give a copy of it: ``t.submit()``, ``t.with_options(...)()``
_RENAMES = frozenset({"with_options", "override"})
_Call = tuple[str, str | None]  # (the called name, the task name a with_options(name=) gives)
_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class _Task:
    """A task defined outside any flow or DAG: a stage of whichever calls it."""

    name: str  #: the orchestrator's name for it
    body: Stage  #: what its own code uses
    calls: set[_Call]


@dataclass
class _File:
    path: Path
    stages: list[Stage] = field(default_factory=list)
    tasks: dict[str, _Task] = field(default_factory=dict)  # function name -> task
    containers: list[tuple[str, str, set[_Call]]] = field(default_factory=list)  # flows, DAGs
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # alias -> (module, name)


def python_stages(paths: Iterable[Path], airflow: AirflowMapping, known: set[str]) -> list[Stage]:
    """The stages of every Python file in ``paths``, tasks linked to the flows that call them."""
    files = [f for f in (_read(p, airflow, known) for p in paths) if f is not None]
    by_stem = {f.path.stem: f for f in files}
    stages: list[Stage] = []
    reached: set[tuple[Path, str]] = set()
    for file in files:
        stages += file.stages
        linked: dict[str, Stage] = {s.name: s for s in file.stages}
        for container, kind, calls in file.containers:
            for owner, func, task, name in _reach(file, calls, by_stem):
                reached.add((owner.path, func))
                full = f"{container}/{name}"
                stage = linked.get(full)
                if stage is None:
                    stage = linked[full] = Stage(full, f"{kind}/task", task.body.source)
                    stages.append(stage)
                stage.references |= task.body.references
                stage.blocks |= task.body.blocks
                stage.notes += [n for n in task.body.notes if n not in stage.notes]
    for file in files:
        for func, task in file.tasks.items():
            body = task.body
            if (file.path, func) not in reached and (body.references or body.blocks or body.notes):
                body.notes.append(
                    f"task {task.name} is called by no flow or DAG among the files planned: at "
                    f"run time its stage is FLOW/{task.name}; plan it with the flow that calls it"
                )
                stages.append(body)
    return stages


def _reach(
    file: _File, calls: set[_Call], by_stem: dict[str, _File]
) -> Iterator[tuple[_File, str, _Task, str]]:
    """Every task ``calls`` runs, directly or through the tasks it calls (not through subflows,
    which are flow runs of their own)."""
    seen: set[tuple[Path, str, str]] = set()
    todo = [(file, called, rename) for called, rename in sorted(calls, key=str)]
    while todo:
        where, called, rename = todo.pop()
        found = _task_named(where, called, by_stem)
        if found is None:
            continue
        owner, func, task = found
        name = rename or task.name
        if (owner.path, func, name) in seen:
            continue
        seen.add((owner.path, func, name))
        yield owner, func, task, name
        todo += [(owner, c, r) for c, r in sorted(task.calls, key=str)]


def _task_named(
    file: _File, called: str, by_stem: dict[str, _File]
) -> tuple[_File, str, _Task] | None:
    if called in file.tasks:
        return file, called, file.tasks[called]
    module, name = file.imports.get(called, ("", ""))
    other = by_stem.get(module.rsplit(".", 1)[-1]) if module else None
    if other is not None and name in other.tasks:
        return other, name, other.tasks[name]
    return None


def _decorator_name(node: ast.expr) -> str:
    """``task`` for ``@task``, ``@task(...)``, ``@task.virtualenv(...)``, ``@decorators.task``."""
    target = node.func if isinstance(node, ast.Call) else node
    chain: list[str] = []
    while isinstance(target, ast.Attribute):
        chain.insert(0, target.attr)
        target = target.value
    if isinstance(target, ast.Name):
        chain.insert(0, target.id)
    return next((name for name in chain if name in {"dag", "task", "flow"}), "")


def _keyword(node: ast.expr, name: str) -> str | None:
    if isinstance(node, ast.Call):
        for kw in node.keywords:
            if kw.arg == name and isinstance(kw.value, ast.Constant):
                return str(kw.value.value)
    return None


def _called(call: ast.Call) -> _Call | None:
    """The name a call runs, through ``.submit``/``.map``/``.with_options(name=...)``..."""
    rename = None
    target: ast.expr = call
    while isinstance(target, ast.Call | ast.Attribute):
        if isinstance(target, ast.Call):
            func = target.func
            if isinstance(func, ast.Attribute) and func.attr in _RENAMES:
                rename = rename or _keyword(target, "name") or _keyword(target, "task_id")
            target = func
        else:
            target = target.value
    return (target.id, rename) if isinstance(target, ast.Name) else None


def _calls(func: _Function) -> set[_Call]:
    return {c for n in ast.walk(func) if isinstance(n, ast.Call) and (c := _called(n))}


def _imports(tree: ast.Module) -> dict[str, tuple[str, str]]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module or "", alias.name)
    return found


def _block_classes(imports: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Local name -> block type slug, for leaseline's blocks (imported under any name)."""
    classes = dict(BLOCK_TYPES)
    for alias, (module, name) in imports.items():
        if module.startswith("leaseline") and name in BLOCK_TYPES:
            classes[alias] = BLOCK_TYPES[name]
    return classes


def _block_load(call: ast.Call, classes: dict[str, str]) -> tuple[str, str] | str | None:
    """``(slug, name)`` of ``SecretReference.load("name")`` / ``Block.load("slug/name")``; a note
    when the name is computed."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in {"load", "aload"}):
        return None
    owner = func.value
    cls = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    if cls not in classes and cls != "Block":
        return None
    arg = call.args[0] if call.args else None
    arg = next((kw.value for kw in call.keywords if kw.arg == "name"), arg)
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        if cls == "Block":
            return None
        return (
            f"line {call.lineno}: {cls}.{func.attr} with a computed name: its block is not planned"
        )
    if cls == "Block":
        slug, _, name = arg.value.partition("/")
        return (slug, name) if slug in BLOCK_TYPES.values() and name else None
    return classes[cls], arg.value


def _read(path: Path, airflow: AirflowMapping, known: set[str]) -> _File | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    result = _File(path, imports=_imports(tree))
    blocks = _block_classes(result.imports)
    stages: dict[str, Stage] = {}
    module = Stage(path.name, "module", str(path))
    callables: dict[str, list[Stage]] = {}  # python_callable=NAME -> the operators' stages
    deferred: list[_Function] = []  # plain module-level functions

    def visit(node: ast.AST, stage: Stage, container: tuple[str, str] | None) -> None:
        for child in ast.iter_child_nodes(node):
            current, inner = stage, container
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if node is tree and not child.decorator_list:
                    deferred.append(child)  # an operator's python_callable, perhaps
                    continue
                for deco in child.decorator_list:
                    kind = _decorator_name(deco)
                    if kind in {"dag", "flow"}:
                        name = (
                            _keyword(deco, "dag_id") or child.name
                            if kind == "dag"
                            else _keyword(deco, "name") or child.name.replace("_", "-")
                        )
                        current = stages.setdefault(name, Stage(name, kind, str(path)))
                        inner = (name, kind)
                        result.containers.append((name, kind, _calls(child)))
                    elif kind == "task":
                        name = _keyword(deco, "task_id") or _keyword(deco, "name") or child.name
                        if container is None:  # a task of whichever flow or DAG calls it
                            task = _Task(name, Stage(name, "task", str(path)), _calls(child))
                            result.tasks[child.name] = task
                            current = task.body
                        else:
                            current = task_stage(name, container)
            elif isinstance(child, ast.With | ast.AsyncWith):
                for item in child.items:
                    dag_id = _dag_context(item.context_expr)
                    if dag_id:
                        inner = (dag_id, "dag")
                        current = stages.setdefault(dag_id, Stage(dag_id, "dag", str(path)))
            elif isinstance(child, ast.Constant) and isinstance(child.value, str):
                ref = reference(child.value, known)
                if ref:
                    stage.references.add(ref)
            elif isinstance(child, ast.Call):
                _airflow_call(child, stage, airflow)
                loaded = _block_load(child, blocks)
                if isinstance(loaded, tuple):
                    stage.blocks.add(loaded)
                elif loaded:
                    stage.notes.append(loaded)
                task_id = _keyword(child, "task_id")
                if container is not None and container[1] == "dag" and task_id:
                    current = task_stage(task_id, container)  # PythonOperator(task_id=...)
                    for kw in child.keywords:
                        if kw.arg == "python_callable" and isinstance(kw.value, ast.Name):
                            callables.setdefault(kw.value.id, []).append(current)
            visit(child, current, inner)

    def task_stage(name: str, container: tuple[str, str]) -> Stage:
        full = f"{container[0]}/{name}"
        return stages.setdefault(full, Stage(full, f"{container[1]}/task", str(path)))

    visit(tree, module, None)
    for func in deferred:
        for stage in callables.get(func.name, [module]):
            defaults = [ast.Expr(value) for value in func.args.defaults]
            visit(ast.Module(body=[*defaults, *func.body], type_ignores=[]), stage, None)
    result.stages = [module, *stages.values()]
    return result


def _dag_context(node: ast.expr) -> str | None:
    """The dag id of ``with DAG("id")`` / ``with DAG(dag_id="id")``."""
    if not (isinstance(node, ast.Call) and _is_dag_class(node)):
        return None
    if node.args and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value)
    return _keyword(node, "dag_id")


def _is_dag_class(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name == "DAG"


def _airflow_call(call: ast.Call, stage: Stage, airflow: AirflowMapping) -> None:
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        return
    pair = (func.value.id, func.attr)
    if pair not in _AIRFLOW_VARIABLE | _AIRFLOW_CONNECTION:
        return
    arg = call.args[0] if call.args else None
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        stage.notes.append(f"line {call.lineno}: {func.value.id}.{func.attr} with a computed key")
        return
    what = "Variable" if pair in _AIRFLOW_VARIABLE else "Connection"
    refs = airflow.variable(arg.value) if what == "Variable" else airflow.connection(arg.value)
    if not refs:
        stage.notes.append(
            f"{what} '{arg.value}' maps to no reference: pass the LeaselineBackend's "
            "backend_kwargs (--airflow-backend-kwargs) or it is not served by leaseline"
        )
    for ref in refs:
        try:
            stage.references.add(str(parse(ref)))
        except InvalidReference as exc:
            stage.notes.append(f"{what} '{arg.value}': {str(exc).splitlines()[0]}")
