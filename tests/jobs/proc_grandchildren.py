"""Process-mode tests: start three grandchildren, write their pids to DATA['file'], hang.

  stay    a plain subprocess: in the child's process group, below it in the tree
  leave   its own session: out of the group, still below the child in the tree
  orphan  started in the background by a shell that exits: in the group, but no longer
          below the child (reparented to init), so only the group kill can reach it
"""

import subprocess
import time


def run(data):
    stay = subprocess.Popen(["sleep", "3600"])
    leave = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    orphan = subprocess.run(["sh", "-c", "sleep 3600 >/dev/null 2>&1 & echo $!"],
                            capture_output=True, text=True, check=True).stdout.strip()
    with open(data["file"], "w") as fh:
        fh.write(f"{stay.pid} {leave.pid} {orphan}")
    time.sleep(3600)
