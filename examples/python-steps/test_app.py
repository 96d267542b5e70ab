"""The frontend against an in-memory gateway (`buildwit_sdk.testing`): no Wasm, no daemon."""

import json
import unittest

from buildwit_sdk import BuildError
from buildwit_sdk.testing import MemoryGateway, run
from wit_world.imports import llb as wit

from app import Steps

BASE = json.dumps({"architecture": "amd64", "os": "linux",
                   "config": {"Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/srv"},
                   "rootfs": {"type": "layers", "diff_ids": []}})
DIGEST = "sha256:" + "0" * 64


class StepsTest(unittest.TestCase):
    def test_a_stepfile_becomes_an_image(self):
        gw = (MemoryGateway()
              .file("dockerfile", "Stepfile", "FROM busybox\nRUN echo hi > /greeting\n")
              .image("docker.io/library/busybox:latest", DIGEST, BASE))
        out = run(Steps, gw)
        step = next(op.kind.value for op in out.definition.ops if isinstance(op.kind, wit.OpKind_Exec))
        self.assertEqual(step.meta.args, ["/bin/sh", "-c", "echo hi > /greeting"])
        # The base image's working directory carries into the step.
        self.assertEqual(step.meta.cwd, "/srv")
        config = out.metadata["containerimage.config"].decode()
        self.assertIn("RUN echo hi > /greeting", config)

    def test_a_step_before_from_is_an_error_at_its_line(self):
        gw = MemoryGateway().file("dockerfile", "Stepfile", "# a comment\nRUN true\n")
        with self.assertRaises(BuildError) as raised:
            run(Steps, gw)
        self.assertIn("must be FROM", raised.exception.message)
        self.assertEqual(raised.exception.location.ranges[0].start.line, 2)


if __name__ == "__main__":
    unittest.main()
