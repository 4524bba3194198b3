#!/usr/bin/env bash
# Reproduce one curve set of docs/results.md: its seeds one after another, then the plot.
#   bash docs/results/reproduce.sh drq_panda_cpu [seeds...]     (default seeds: 0 1 2)
# Logs go to runs/results/<set>/<set>_seed<N>/; the small CSVs are what docs/results/<set>/ keeps.
# RESUME=true continues a stopped run from its last checkpoint (Ctrl-C or SIGTERM saves one; its
# time/minutes curve goes on from where it stopped).
set -euo pipefail
cd "$(dirname "$0")/../.."
set_name="${1:?usage: reproduce.sh <drq_panda_cpu|drq_piper_cpu|sac_state_nodemo|sac_state_nodemo_50hz|sac_state_nodemo_idle_steps|sac_state_nodemo_serl_learner|sac_state_demos> [seeds...]}"
shift
[ $# -gt 0 ] || set -- 0 1 2
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
logdir="runs/results/$set_name"
for seed in "$@"; do
    common=(--seed "$seed" --logdir "$logdir" --exp_name "${set_name}_seed${seed}" --progress false
            --resume "${RESUME:-false}")
    case "$set_name" in
        # pixels, 2-core CPU: the recipes' CPU preset (pretrained trunk, 2 cached views, 20 scripted demos)
        drq_panda_cpu) python recipes/drq.py --preset cpu --checkpoint_every 1000000 "${common[@]}" ;;
        drq_piper_cpu) python recipes/drq.py --env.task piper --preset cpu --checkpoint_every 1000000 "${common[@]}" ;;
        # state: SERL's defaults (UTD 8), without and with 20 scripted demos; compiled learner (same math)
        sac_state_nodemo) python recipes/sac_state_sim.py --compile true --total_steps 50000 --eval_every 5000 --eval_episodes 20 "${common[@]}" ;;
        # the same at franka_sim's control rate (50 Hz, 2 s episodes) instead of the default 10 Hz
        sac_state_nodemo_50hz) python recipes/sac_state_sim.py --compile true --env.control_hz 50 --total_steps 50000 --eval_every 5000 --eval_episodes 20 "${common[@]}" ;;
        # the same with optax-style idle optimizer steps only (the actor and temperature Adam steps on zero
        # gradients on the 7 critic-only updates; ~0.98x the learner's speed, bench_sac_schedules.py)
        sac_state_nodemo_idle_steps) python recipes/sac_state_sim.py --compile true --sac.idle_optimizer_steps true --total_steps 50000 --eval_every 5000 --eval_episodes 20 "${common[@]}" ;;
        # the same with SERL's learner: optax-style idle optimizer steps, the actor and temperature on the
        # whole 8 x 256 sample after the 8 critic updates, std_max 5, Xavier actor init (10 Hz, as sac_state_nodemo;
        # ~0.6x the learner's speed)
        sac_state_nodemo_serl_learner) python recipes/sac_state_sim.py --compile true --sac.idle_optimizer_steps true --sac.actor_on_whole_sample true --sac.std_max 5 --sac.actor_init xavier --total_steps 50000 --eval_every 5000 --eval_episodes 20 "${common[@]}" ;;
        sac_state_demos)
            demos="runs/results/demos_panda_state"
            [ -d "$demos" ] || python recipes/record_demos.py --out "$demos" --episodes 20
            python recipes/sac_state_sim.py --compile true --demos "$demos" --total_steps 15000 --eval_every 2500 --eval_episodes 20 "${common[@]}" ;;
        *) echo "unknown curve set $set_name" >&2; exit 2 ;;
    esac
done
python -m torchrl_serl.training.plot "$logdir" --out "docs/results/$set_name.png" --metrics eval/success_rate train/success
