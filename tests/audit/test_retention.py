"""The log's retention as docs/audit.md describes it: forever by default, changeable in place."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from adapters.settings import CommonSettings

pytestmark = pytest.mark.integration


async def topic_config(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    resources: list[Any] = response.resources
    [(error_code, _, _, name, entries)] = [r[:5] for r in resources]
    assert error_code == 0 and name == topic
    return {entry[0]: entry[1] for entry in entries}


async def test_log_is_kept_forever_and_retention_changes_on_the_existing_topic(
    settings: CommonSettings,
) -> None:
    topic = settings.kafka.events_topic
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        before = await topic_config(admin, topic)
        assert (before["cleanup.policy"], before["retention.ms"]) == ("delete", "-1")
        # The documented call: non-incremental, so every dynamic setting is passed.
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic,
                    configs={"cleanup.policy": "delete", "retention.ms": "34560000000"},
                )
            ]
        )
        after = await topic_config(admin, topic)
        assert (after["cleanup.policy"], after["retention.ms"]) == ("delete", "34560000000")
    finally:
        await admin.close()
