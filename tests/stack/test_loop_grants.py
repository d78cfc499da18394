"""The secured stack's grants for the closed loop, read from stack/security.sh without starting anything: the
names it uses default as the programs' do, and its kafka-acls commands grant what tools/chaos/secured_kafka.py
grants a broker of its own (two descriptions of one policy, which must not drift apart)."""

from __future__ import annotations

from config import Settings, load_settings
from tests.integration.secured_stack import NO_FILE
from tests.stack.shell import STACK, clean_environment, run_lib
from tools.chaos.secured_kafka import (
    CONSUMER,
    CREATE,
    DESCRIBE,
    GROUP,
    LITERAL,
    PREFIXED,
    READ,
    TOPIC,
    TRANSACTIONAL_ID,
    WRITE,
    Acl,
    ClosedLoopNames,
    closed_loop_acls,
    pipeline_acls,
)

RESOURCES = {"--topic": TOPIC, "--group": GROUP, "--transactional-id": TRANSACTIONAL_ID}
OPERATIONS = {"Read": READ, "Write": WRITE, "Create": CREATE, "Describe": DESCRIBE}
PATTERNS = {"literal": LITERAL, "prefixed": PREFIXED}
# Names unlike the defaults, with a shadow topic: every name must come from its own setting.
NAMES = {
    "INPUT_TOPIC": "in", "OUTPUT_TOPIC": "out", "DLQ_TOPIC": "dlq", "SHADOW_OUTPUT_TOPIC": "shadow", "KAFKA_GROUP_ID": "svc",
    "PURCHASES_TOPIC": "buys", "PURCHASES_GROUP_ID": "buys-sink", "QUALITY_TOPIC": "quality",
}


def acls_of_command(arguments: list[str]) -> set[Acl]:
    """What one `kafka-acls --add` with these arguments grants: every principal, every operation, on every resource."""
    principals, operations, resources, pattern = [], [], [], LITERAL
    pairs = iter(arguments)
    for option in pairs:
        value = next(pairs)
        if option == "--allow-principal":
            principals.append(value)
        elif option == "--operation":
            operations.append(OPERATIONS[value])
        elif option == "--resource-pattern-type":
            pattern = PATTERNS[value]
        else:
            resources.append((RESOURCES[option], value))
    assert principals and operations and resources, arguments
    return {(kind, name, pattern, who, what) for who in principals for what in operations for kind, name in resources}


def stack_acls(**names: str) -> set[Acl]:
    """Every grant of security.sh's kafka_acls for these names."""
    result = run_lib(f'source "{STACK / "security.sh"}" && kafka_acls', env=clean_environment(STACK_SECURITY="on", **names))
    assert result.returncode == 0, result.stderr
    return {acl for line in result.stdout.splitlines() for acl in acls_of_command(line.split())}


def test_the_stacks_closed_loop_names_default_as_the_programs_do():
    """With nothing set, the ACLs name config's purchases topic, purchase sink group and quality topic."""
    result = run_lib('printf "%s\\n" "$PURCHASES_TOPIC" "$PURCHASES_GROUP_ID" "$QUALITY_TOPIC"')
    assert result.returncode == 0, result.stderr
    defaults = Settings()
    assert result.stdout.split("\n")[:3] == [defaults.purchases_topic, defaults.purchases_group_id, defaults.quality_topic]


def test_a_closed_loop_name_the_acl_tool_cannot_take_is_refused():
    """QUALITY_TOPIC is an argument of Kafka's ACL tool: with a space in it, STACK_SECURITY=on stops before anything starts."""
    result = run_lib("true", env=clean_environment(STACK_SECURITY="on", QUALITY_TOPIC="quality figures"))
    assert result.returncode != 0
    assert "ERROR: QUALITY_TOPIC" in result.stderr


def test_the_stack_grants_what_the_fault_harness_grants():
    """security.sh's commands and secured_kafka.py's requests grant the same, but for the consumer's reading of the
    pipeline, which the harness has no use for; no grant of the closed loop is missing on either side."""
    stack = stack_acls(**NAMES)
    settings = load_settings(environ={**NAMES, "SHADOW_MODEL_URI": "model/shadow.joblib"}, env_file=NO_FILE)
    harness = {
        *pipeline_acls(settings.input_topic, (settings.output_topic, settings.dlq_topic, settings.shadow_output_topic),
                       settings.kafka_group_id),
        *closed_loop_acls(ClosedLoopNames.of(settings)),
    }
    assert harness <= stack, sorted(harness - stack)
    assert {acl[3] for acl in stack - harness} == {f"User:{CONSUMER}"}, sorted(stack - harness)


def test_each_closed_loop_principal_has_only_its_own_topics():
    """Without a shadow topic, the monitor reads predictions, purchases and its snapshots; the sink never reads predictions;
    training never writes; nobody but the sink and the monitor creates the closed loop's topics."""
    names = {**NAMES, "SHADOW_OUTPUT_TOPIC": ""}
    stack = stack_acls(**names)

    def granted(principal: str, operation: int) -> set[str]:
        return {name for _kind, name, _pattern, who, what in stack if who == f"User:{principal}" and what == operation}

    assert granted("quality-monitor", READ) == {"out", "buys", "quality"}
    assert granted("quality-monitor", WRITE) == granted("quality-monitor", CREATE) == {"quality"}
    assert granted("purchase-sink", READ) == {"buys", "buys-sink"}
    assert granted("purchase-sink", WRITE) == {"dlq"}
    assert granted("trainer", READ) == {"in", "out"}
    assert granted("trainer", WRITE) == granted("trainer", CREATE) == set()
    creators = {who for _kind, name, _pattern, who, what in stack if what == CREATE and name in {"buys", "quality"}}
    assert creators == {"User:purchase-sink", "User:quality-monitor"}
