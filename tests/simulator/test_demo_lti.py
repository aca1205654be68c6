"""``scripts/demo --lti``: the tool runs as one more process of the cluster, registered with the
stand-in LMS, and a launch from the LMS's course page reaches it and comes back a token."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from adapters.settings import CommonSettings, KafkaSettings
from simulator.demo import add_lti, lms_links
from simulator.launcher import Cluster
from simulator.system import isolated_env
from tests.conftest import unique
from tests.lti.platform import DEMO_COURSE, authorize, begin_login

pytestmark = pytest.mark.integration


async def test_the_demo_tool_launches_from_the_stand_in_lms(tmp_path: Path) -> None:
    run = unique("demo-lti")
    cluster = Cluster(
        env=isolated_env(run, KafkaSettings.for_run(run), secret="s" * 40),
        log_dir=tmp_path,
        gateway_slots=(),
    )
    lms = add_lti(cluster, app_port=9)
    await lms.start()
    try:
        await cluster.start("lti")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            auth = await begin_login(
                lms, http, user_id="alice", context_id=DEMO_COURSE, link_id="exam-1"
            )
            form = await authorize(lms, http, auth)
            cookie = "; ".join(f"{k}={v}" for k, v in auth.cookies.items())
            async with http.post(
                form.action, data=form.fields, headers={"Cookie": cookie}, allow_redirects=False
            ) as resp:
                assert resp.status == 303, await resp.text()
                assert resp.headers["Location"].startswith("http://127.0.0.1:9/exam#token=")
        links = dict(lms_links(lms))
        assert links["LMS course as the instructor"].endswith("user=carol")
        assert links["LTI tool configuration"] == f"{cluster.services['lti'].ops_url}/lti/config"
    finally:
        await cluster.stop_all()
        await lms.stop()
        redis = aioredis.Redis.from_url(CommonSettings().redis.url)
        async for key in redis.scan_iter(match=f"{run}:*"):
            await redis.delete(key)
        await redis.aclose()
