"""The post-promotion watch end to end: a canary whose regression shows only in labels that arrive
after its promotion is caught in the watch and rolled back to the baseline, which kept a 5% holdback.

Real model servers (the canary trained with half of its digit-7 labels noisy: better than the
baseline on the pool, much worse on digit 7), the real operator, Prometheus and HTTPRoute. The driver
holds back every digit-7 label until the rollout is promoted, standing in for a class whose labels
come late (disputes, reviews); then the backlog arrives, for both arms, and the per-class judge of
digit 7 finds the regression in the watch.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from kubernetes import client

from lossgate_dev.demo.scenario import PER_CLASS, Scenario
from lossgate_dev.demo.stack import Stack
from lossgate_dev.devenv.procs import wait_until
from tests.e2e.conftest import TERMINAL, condition, history
from tests.notify.receiver import receiver


def test_a_regression_in_late_labels_is_caught_in_the_watch_and_rolled_back(
    stack: Stack, namespace: str, tmp_path: Path
) -> None:
    with receiver() as rx:
        sinks = tmp_path / "notifications.yaml"
        sinks.write_text(
            f"sinks:\n- {{name: oncall, type: webhook, url: '{rx.url}/hook', rollouts: all,\n"
            "   events: [promote, rollback]}\n"
        )
        # Given the classbad canary, whose digit-7 labels (and the baseline's) are held back for now
        sc = Scenario("digits", "classbad")
        sc.prepare(stack, namespace)
        assert sc.driver is not None
        sc.driver.hold_classes = frozenset({7})
        stack.backfill_training({sc.run: None})
        sc.driver.start()
        try:
            stack.start_operator([namespace], extra_env={"LOSSGATE_NOTIFICATIONS_FILE": str(sinks)})
            # And a rollout with per-class checks and a 5% holdback watched for 10 minutes
            manifest = sc.manifest(
                stack.prom.url,
                stepDefaults={"minSamples": 150, "minDuration": "6s"},
                postPromotion={"holdbackWeight": 5, "window": "10m"},
            )
            manifest["spec"]["analysis"]["loss"]["perClass"] = PER_CLASS
            stack.apply_rollout(namespace, manifest)
            # When the ramp sees no regression (digit 7 has no labels yet)
            got = stack.wait_phase(namespace, "digits", {"Watching", *TERMINAL}, timeout=240)
            trail = history(stack, namespace)
            print(trail)
            # Then it is promoted into the watch: the baseline keeps 5%
            assert got["status"]["phase"] == "Watching", trail
            assert stack.route_weights(namespace, "digits") == {"digits-v1": 5, "digits-v2": 95}
            assert condition(got, "Promoted")["status"] == "True"
            assert condition(got, "PostPromotionWatch")["reason"] == "WatchStarted"
            assert got["status"]["watch"]["holdbackWeight"] == 5
            seven = [c for c in got["status"].get("checks", []) if c["name"] == "7"]
            assert all(c["verdict"] != "Regression" for c in seven), seven
            # When the held digit-7 labels arrive after the promotion, once the watch's first interval
            # is over (the judge drops the first interval after any weight change: a mixed split)
            started_ms = _ms(got["status"]["watch"]["startedAt"])
            wait_until(
                lambda: _judged_through(stack, namespace) > started_ms + 2 * 2000,
                60,
                "the judge past the watch's first interval",
                stack.operator,
            )
            assert sc.driver.release_held() >= 40
            got = stack.wait_phase(namespace, "digits", TERMINAL, timeout=180)
            trail = history(stack, namespace)
            print(trail)
            # Then the watch finds the regression and rolls back to the baseline
            status = got["status"]
            assert status["phase"] == "RolledBack", trail
            assert stack.route_weights(namespace, "digits") == {"digits-v1": 100, "digits-v2": 0}
            assert condition(got, "RolledBack")["reason"] == "PostPromotionRegression"
            assert condition(got, "Promoted")["reason"] == "PromotionReverted"
            assert condition(got, "PostPromotionWatch")["status"] == "False"
            assert status["watch"]["finding"] == "Regression"
            # And it was digit 7's judge, on real numbers: its canary loss far above the baseline's
            (c7,) = [c for c in status["checks"] if c["name"] == "7"]
            assert c7["verdict"] == "Regression"
            assert c7["meanCanary"] > 2 * c7["meanBaseline"]
            assert c7["nCanary"] >= 40
            assert "classLoss check 7" in status["message"]
            # And a Warning Event says so
            events = client.CoreV1Api(stack.api).list_namespaced_event(namespace).items
            mine = [e for e in events if e.reason == "PostPromotionRegression"]
            assert len(mine) == 1
            assert mine[0].type == "Warning"
            assert "post-promotion watch" in mine[0].message
            # And the webhook got the promotion, then the rollback with the watch's reason
            received = rx.wait_for(2, within=30)
            assert [r.body["event"] for r in received] == ["promote", "rollback"]
            assert received[-1].body["decision"]["reason"] == "PostPromotionRegression"
        finally:
            sc.driver.stop()


def _ms(timestamp: str) -> int:
    return round(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


def _judged_through(stack: Stack, namespace: str) -> int:
    """Where the judge's running state ends (unix ms): the intervals it has folded so far."""
    state = (stack.rollout(namespace, "digits").get("status") or {}).get("judgeState") or {}
    return int(state.get("throughMs") or 0)
