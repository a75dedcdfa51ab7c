"""DMC pixel rendering: `physics.render` (a new dm_control Camera and scene every call) against the Camera that
DMCEnv keeps for its life (worldmodels/envs/dmc.py KeptCameras). Both renders of the same physics state, taken in turns (the
order swapped every step) so both see the same machine load; milliseconds per 64x64 frame, medians over rounds.

    MUJOCO_GL=egl python benchmarks/dmc_render.py --task cartpole-swingup --steps 300 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from worldmodels.envs.dmc import KeptCameras, make_dmc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    env = make_dmc(args.task, obs="proprio", action_repeat=1, seed=0)
    physics = env.unwrapped._env.physics
    kept = KeptCameras()
    times: dict[str, list[float]] = {"physics.render": [], "kept camera": []}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        spent = dict.fromkeys(times, 0.0)
        env.reset()
        for i in range(args.steps):
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            frames = {}
            for name in list(times)[:: 1 if i % 2 else -1]:
                began = time.perf_counter()
                if name == "physics.render":
                    frames[name] = np.array(physics.render(height=args.size, width=args.size, camera_id=0))
                else:
                    frames[name] = np.array(kept.get(physics, args.size, args.size, 0).render())
                spent[name] += time.perf_counter() - began
            assert np.array_equal(*frames.values()), "the two renders differ"
            if terminated or truncated:
                env.reset()
        for name, per_round in times.items():
            per_round.append(spent[name] / args.steps * 1e3)
    kept.free()
    env.close()
    old, new = (statistics.median(t) for t in times.values())
    print(f"{args.task} {args.size}x{args.size}: physics.render {old:.2f} ms/frame, kept camera {new:.2f} ms/frame "
          f"({old / new:.2f}x), medians over {args.rounds} rounds of {args.steps} steps; frames identical")


if __name__ == "__main__":
    main()
