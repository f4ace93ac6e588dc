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

from ._prefect import BLOCK_TYPES
from ._sources import AirflowMapping, Stage, airflow_lookup, reference

__all__ = ["python_stages"]

#: methods that run a task, or give a copy of it: ``t.submit()``, ``t.with_options(...)()``
_RENAMES = frozenset({"with_options", "override"})
#: a call: the name called, the task name a ``with_options(name=)`` gives, and the arguments
#: it passes that are known strings (``("#0", "training-db")``: the first positional one)
_Call = tuple[str, str | None, tuple[tuple[str, str], ...]]
_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class _Task:
    """A task defined outside any flow or DAG: a stage of whichever calls it."""

    name: str  #: the orchestrator's name for it
    body: Stage  #: what its own code uses
    calls: set[_Call]
    params: list[str] = field(default_factory=list)  #: positional parameters, in order
    defaults: dict[str, str] = field(default_factory=dict)  #: parameters' string defaults
    #: blocks loaded by a parameter's value: (slug, parameter, ``Class.load``, line)
    loads: list[tuple[str, str, str, int]] = field(default_factory=list)

    def load_blocks(self, stage: Stage, bound: dict[str, str], caller: str) -> None:
        """Add the blocks this task loads by parameter to ``stage``, the call's ``bound``
        arguments (``#N`` positional, else by name) or the parameters' defaults naming them."""
        for index, param in enumerate(self.params):
            if f"#{index}" in bound:
                bound = {**bound, param: bound[f"#{index}"]}
        for slug, param, label, line in self.loads:
            value = bound.get(param) or self.defaults.get(param)
            if value:
                stage.blocks.add((slug, value))
                continue
            note = (
                f"line {line}: {label}({param}) in task {self.name}: {caller} passes no known "
                f"name for {param}: its block is not planned"
            )
            if note not in stage.notes:
                stage.notes.append(note)


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
            for owner, func, task, name, bound in _reach(file, calls, by_stem):
                reached.add((owner.path, func))
                full = f"{container}/{name}"
                stage = linked.get(full)
                if stage is None:
                    stage = linked[full] = Stage(full, f"{kind}/task", task.body.source)
                    stages.append(stage)
                stage.references |= task.body.references
                stage.blocks |= task.body.blocks
                stage.notes += [n for n in task.body.notes if n not in stage.notes]
                task.load_blocks(stage, bound, container)
    for file in files:
        for func, task in file.tasks.items():
            body = task.body
            if (file.path, func) in reached:
                continue
            task.load_blocks(body, {}, "no flow")
            if body.references or body.blocks or body.notes:
                body.notes.append(
                    f"task {task.name} is called by no flow or DAG among the files planned: at "
                    f"run time its stage is FLOW/{task.name}; plan it with the flow that calls it"
                )
                stages.append(body)
    return stages


def _reach(
    file: _File, calls: set[_Call], by_stem: dict[str, _File]
) -> Iterator[tuple[_File, str, _Task, str, dict[str, str]]]:
    """Every task ``calls`` runs, directly or through the tasks it calls (not through subflows,
    which are flow runs of their own), with the known arguments of the call."""
    seen: set[tuple[Path, str, _Call]] = set()
    todo = [(file, call) for call in sorted(calls, key=str)]
    while todo:
        where, call = todo.pop()
        called, rename, args = call
        found = _task_named(where, called, by_stem)
        if found is None:
            continue
        owner, func, task = found
        if (owner.path, func, call) in seen:
            continue
        seen.add((owner.path, func, call))
        yield owner, func, task, rename or task.name, dict(args)
        todo += [(owner, c) for c in sorted(task.calls, key=str)]


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


def _called(call: ast.Call, params: dict[str, str | None]) -> _Call | None:
    """The name a call runs, through ``.submit``/``.map``/``.with_options(name=...)``..., and
    the arguments it passes that are strings (literals, or ``params`` with a string default)."""
    args: list[tuple[str, str]] = []
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in _RENAMES):
        for index, arg in enumerate(call.args):
            value = _string(arg, params)
            if value is not None:
                args.append((f"#{index}", value))
        for kw in call.keywords:
            value = _string(kw.value, params)
            if kw.arg and value is not None:
                args.append((kw.arg, value))
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
    return (target.id, rename, tuple(args)) if isinstance(target, ast.Name) else None


def _string(node: ast.expr, params: dict[str, str | None]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return params.get(node.id) if isinstance(node, ast.Name) else None


def _params(func: _Function) -> tuple[list[str], dict[str, str | None]]:
    """``func``'s positional parameters and every parameter's string default (or ``None``)."""
    a = func.args
    positional = [p.arg for p in [*a.posonlyargs, *a.args]]
    found: dict[str, str | None] = dict.fromkeys(positional)
    for name, default in zip(
        positional[len(positional) - len(a.defaults) :], a.defaults, strict=True
    ):
        found[name] = _string(default, {})
    for p, kw_default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        found[p.arg] = None if kw_default is None else _string(kw_default, {})
    return positional, found


def _calls(func: _Function, params: dict[str, str | None]) -> set[_Call]:
    found = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            call = _called(node, params)
            if call is not None:
                found.add(call)
    return found


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


@dataclass
class _Scope:
    """The flow or task function code is in: its parameters, for blocks loaded by name."""

    kind: str  #: ``flow``, ``dag``, ``task``
    params: dict[str, str | None]
    task: _Task | None = None  #: a task defined outside any flow: resolved per call


def _block_load(
    call: ast.Call, classes: dict[str, str], scope: _Scope | None, stage: Stage
) -> None:
    """Record ``SecretReference.load("name")`` / ``Block.load("slug/name")`` on ``stage``. A
    name that is a task's parameter is resolved per call (:meth:`_Task.load_blocks`), a flow
    parameter's default is taken with a note; any other computed name is a note."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in {"load", "aload"}):
        return
    owner = func.value
    cls = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    if cls not in classes and cls != "Block":
        return
    arg = call.args[0] if call.args else None
    arg = next((kw.value for kw in call.keywords if kw.arg == "name"), arg)
    label = f"{cls}.{func.attr}"
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        slug, name = (classes[cls], arg.value) if cls != "Block" else arg.value.partition("/")[::2]
        if slug in BLOCK_TYPES.values() and name:
            stage.blocks.add((slug, name))
        return
    if cls == "Block":
        return  # any block type: not necessarily leaseline's
    param = arg.id if isinstance(arg, ast.Name) else ""
    if scope is not None and param in scope.params:
        if scope.task is not None:
            scope.task.loads.append((classes[cls], param, label, call.lineno))
            return
        default = scope.params[param]
        if default and scope.kind == "flow":
            stage.blocks.add((classes[cls], default))
            stage.notes.append(
                f"line {call.lineno}: {label}({param}): planned for the flow parameter's default "
                f"'{default}'; a run given another {param} loads another block"
            )
            return
    stage.notes.append(
        f"line {call.lineno}: {label} with a computed name: its block is not planned"
    )


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

    def visit(
        node: ast.AST, stage: Stage, container: tuple[str, str] | None, scope: _Scope | None
    ) -> None:
        for child in ast.iter_child_nodes(node):
            current, inner, inner_scope = stage, container, scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if node is tree and not child.decorator_list:
                    deferred.append(child)  # an operator's python_callable, perhaps
                    continue
                positional, params = _params(child)
                for deco in child.decorator_list:
                    kind = _decorator_name(deco)
                    if kind:
                        inner_scope = _Scope(kind, params)
                    if kind in {"dag", "flow"}:
                        name = (
                            _keyword(deco, "dag_id") or child.name
                            if kind == "dag"
                            else _keyword(deco, "name") or child.name.replace("_", "-")
                        )
                        current = stages.setdefault(name, Stage(name, kind, str(path)))
                        inner = (name, kind)
                        result.containers.append((name, kind, _calls(child, params)))
                    elif kind == "task":
                        name = _keyword(deco, "task_id") or _keyword(deco, "name") or child.name
                        if container is None:  # a task of whichever flow or DAG calls it
                            task = _Task(
                                name,
                                Stage(name, "task", str(path)),
                                _calls(child, params),
                                positional,
                                {k: v for k, v in params.items() if v is not None},
                            )
                            result.tasks[child.name] = task
                            current, inner_scope = task.body, _Scope(kind, params, task)
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
                airflow_lookup(child, stage, airflow)
                _block_load(child, blocks, scope, stage)
                task_id = _keyword(child, "task_id")
                if container is not None and container[1] == "dag" and task_id:
                    current = task_stage(task_id, container)  # PythonOperator(task_id=...)
                    for kw in child.keywords:
                        if kw.arg == "python_callable" and isinstance(kw.value, ast.Name):
                            callables.setdefault(kw.value.id, []).append(current)
            visit(child, current, inner, inner_scope)

    def task_stage(name: str, container: tuple[str, str]) -> Stage:
        full = f"{container[0]}/{name}"
        return stages.setdefault(full, Stage(full, f"{container[1]}/task", str(path)))

    visit(tree, module, None, None)
    for func in deferred:
        for stage in callables.get(func.name, [module]):
            defaults = [ast.Expr(value) for value in func.args.defaults]
            body = ast.Module(body=[*defaults, *func.body], type_ignores=[])
            visit(body, stage, None, None)
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
