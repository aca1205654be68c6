"""The optional Docker path: the same real services from testcontainers, not infra/stack.

Chosen with ``PROCTOR_INFRA=testcontainers`` on machines with a Docker engine (install the
``docker`` extra). The default path, and the one CI uses, is ``infra/stack`` (this
workplace has no Docker engine), so this module is not exercised on CI.
"""

from __future__ import annotations

from contextlib import ExitStack

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
REDIS_IMAGE = "redis:7.4-alpine"
DYNAMODB_IMAGE = "amazon/dynamodb-local:2.6.1"


def start_containers(stack: ExitStack) -> dict[str, str]:
    """Start Kafka (KRaft), Redis and DynamoDB Local; return the settings' env variables."""
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import PortWaitStrategy

    kafka = stack.enter_context(KafkaContainer(KAFKA_IMAGE).with_kraft())
    redis = stack.enter_context(RedisContainer(REDIS_IMAGE))
    dynamo = stack.enter_context(
        DockerContainer(DYNAMODB_IMAGE).with_exposed_ports(8000).waiting_for(PortWaitStrategy(8000))
    )
    redis_host = redis.get_container_host_ip()
    dynamo_host = dynamo.get_container_host_ip()
    return {
        "PROCTOR_KAFKA__BOOTSTRAP": kafka.get_bootstrap_server(),
        "PROCTOR_REDIS__URL": f"redis://{redis_host}:{redis.get_exposed_port(6379)}/0",
        "PROCTOR_DYNAMO__ENDPOINT": f"http://{dynamo_host}:{dynamo.get_exposed_port(8000)}",
    }
