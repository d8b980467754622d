#!/usr/bin/env python3
"""RefVLM training step: ours (`vlmdata train-smoke`) against the same model written in numpy, in one run.

The numpy side is the same network with the same shapes (patch embedding + positions, projector, 2-layer pre-LN
GPT decoder C=64 with 4 heads, tied head, masked cross-entropy, global-norm clipping, AdamW), float32, one thread.
It reads the shapes ours reports (batch, expanded sequence length, vocabulary, patches) so both do the same work.

    Benchmarks/bench_train.py --bin .build/release/vlmdata --work /tmp/bench-train [--quick]

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the numpy side only (they slow a current numpy; see the env notes),
and the kernel numpy then uses is printed.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def numpy_side(cfg, steps, warmup):
    """Runs in a child with one BLAS thread: returns per-step seconds of forward + backward + AdamW."""
    import numpy as np

    B, T, V = cfg["batch"], cfg["seq_len"], cfg["vocab"]
    Np, PD, C, L, H = cfg["patches"], cfg["patch_dim"], cfg["channels"], cfg["layers"], cfg["heads"]
    mlp = cfg.get("projector", "linear") == "mlp2x_gelu"
    hs = C // H
    rng = np.random.default_rng(0)
    f32 = np.float32

    def w(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(f32)

    P = {"patch_w": w(C, PD), "patch_b": np.zeros(C, f32), "patch_pos": w(Np, C),
         "p1_w": w(C, C), "p1_b": np.zeros(C, f32), "wte": w(V, C), "wpe": w(T, C),
         "lnf_w": np.ones(C, f32), "lnf_b": np.zeros(C, f32)}
    if mlp:
        P["p2_w"], P["p2_b"] = w(C, C), np.zeros(C, f32)
    for l in range(L):
        P.update({f"{l}.ln1_w": np.ones(C, f32), f"{l}.ln1_b": np.zeros(C, f32),
                  f"{l}.qkv_w": w(3 * C, C), f"{l}.qkv_b": np.zeros(3 * C, f32),
                  f"{l}.ap_w": w(C, C, std=0.02 / (2 * L) ** 0.5), f"{l}.ap_b": np.zeros(C, f32),
                  f"{l}.ln2_w": np.ones(C, f32), f"{l}.ln2_b": np.zeros(C, f32),
                  f"{l}.fc_w": w(4 * C, C), f"{l}.fc_b": np.zeros(4 * C, f32),
                  f"{l}.fp_w": w(C, 4 * C, std=0.02 / (2 * L) ** 0.5), f"{l}.fp_b": np.zeros(C, f32)})
    M = {k: np.zeros_like(v) for k, v in P.items()}
    Vm = {k: np.zeros_like(v) for k, v in P.items()}

    # a batch shaped like ours: BOS, Np image positions, answer tokens
    pixels = rng.integers(0, 256, (B, Np, PD), dtype=np.uint8)
    ntext = T - Np
    tokens = rng.integers(0, V, (B, T))
    is_img = np.zeros((B, T), bool)
    is_img[:, 1:1 + Np] = True
    targets = np.full((B, T), -100)
    targets[:, Np:T - 1] = tokens[:, Np + 1:T]
    mean = np.array([0.48145466, 0.4578275, 0.40821073] * (PD // 3), f32)
    std = np.array([0.26862954, 0.26130258, 0.27577711] * (PD // 3), f32)
    causal = np.triu(np.ones((T, T), bool), 1)
    k_gelu = f32(0.7978845608028654)

    def ln_f(x, g, b):
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
        n = xc * rstd
        return n * g + b, (n, rstd)

    def ln_b(d, cache, g):
        n, rstd = cache
        dn = d * g
        dx = (dn - dn.mean(-1, keepdims=True) - n * (dn * n).mean(-1, keepdims=True)) * rstd
        return dx, (d * n).reshape(-1, d.shape[-1]).sum(0), d.reshape(-1, d.shape[-1]).sum(0)

    def gelu_f(x):
        t = np.tanh(k_gelu * (x + f32(0.044715) * x ** 3))
        return 0.5 * x * (1 + t), t

    def gelu_b(d, x, t):
        return d * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k_gelu * (1 + 3 * f32(0.044715) * x * x))

    def step(t_step):
        G = {}
        x_pix = (pixels.astype(f32) / f32(255) - mean) / std
        pe = x_pix @ P["patch_w"].T + P["patch_b"] + P["patch_pos"]
        h1 = pe @ P["p1_w"].T + P["p1_b"]
        if mlp:
            g1, t1 = gelu_f(h1)
            proj = g1 @ P["p2_w"].T + P["p2_b"]
        else:
            proj = h1
        x = P["wte"][np.where(is_img, 0, tokens)]
        x[is_img] = proj.reshape(-1, C)
        x = x + P["wpe"][:T]
        caches = []
        for l in range(L):
            a, c1 = ln_f(x, P[f"{l}.ln1_w"], P[f"{l}.ln1_b"])
            qkv = a @ P[f"{l}.qkv_w"].T + P[f"{l}.qkv_b"]
            q, k, v = [qkv[..., i * C:(i + 1) * C].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in range(3)]
            s = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(f32(hs))
            s[..., causal] = -np.inf
            s = np.exp(s - s.max(-1, keepdims=True))
            att = s / s.sum(-1, keepdims=True)
            y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
            r2 = x + y @ P[f"{l}.ap_w"].T + P[f"{l}.ap_b"]
            b2, c2 = ln_f(r2, P[f"{l}.ln2_w"], P[f"{l}.ln2_b"])
            fh = b2 @ P[f"{l}.fc_w"].T + P[f"{l}.fc_b"]
            fg, ft = gelu_f(fh)
            x3 = r2 + fg @ P[f"{l}.fp_w"].T + P[f"{l}.fp_b"]
            caches.append((x, a, c1, q, k, v, att, y, r2, b2, c2, fh, fg, ft))
            x = x3
        xf, cf = ln_f(x, P["lnf_w"], P["lnf_b"])
        logits = xf @ P["wte"].T
        logits -= logits.max(-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(-1, keepdims=True)
        mask = targets >= 0
        cnt = mask.sum()
        tg = np.where(mask, targets, 0)
        loss = -np.log(np.take_along_axis(probs, tg[..., None], -1)[..., 0][mask]).mean()
        # backward
        dlog = probs.copy()
        np.put_along_axis(dlog, tg[..., None], np.take_along_axis(dlog, tg[..., None], -1) - 1, -1)
        dlog *= (mask / cnt)[..., None].astype(f32)
        G["wte"] = dlog.reshape(-1, V).T @ xf.reshape(-1, C)
        dxf = dlog @ P["wte"]
        dx, G["lnf_w"], G["lnf_b"] = ln_b(dxf, cf, P["lnf_w"])
        for l in reversed(range(L)):
            x0, a, c1, q, k, v, att, y, r2, b2, c2, fh, fg, ft = caches[l]
            G[f"{l}.fp_w"] = dx.reshape(-1, C).T @ fg.reshape(-1, 4 * C)
            G[f"{l}.fp_b"] = dx.reshape(-1, C).sum(0)
            dfh = gelu_b(dx @ P[f"{l}.fp_w"], fh, ft)
            G[f"{l}.fc_w"] = dfh.reshape(-1, 4 * C).T @ b2.reshape(-1, C)
            G[f"{l}.fc_b"] = dfh.reshape(-1, 4 * C).sum(0)
            db2 = dfh @ P[f"{l}.fc_w"]
            dr2, G[f"{l}.ln2_w"], G[f"{l}.ln2_b"] = ln_b(db2, c2, P[f"{l}.ln2_w"])
            dr2 = dr2 + dx
            G[f"{l}.ap_w"] = dr2.reshape(-1, C).T @ y.reshape(-1, C)
            G[f"{l}.ap_b"] = dr2.reshape(-1, C).sum(0)
            dy = (dr2 @ P[f"{l}.ap_w"]).reshape(B, T, H, hs).transpose(0, 2, 1, 3)
            datt = dy @ v.transpose(0, 1, 3, 2)
            dv = att.transpose(0, 1, 3, 2) @ dy
            ds = att * (datt - (datt * att).sum(-1, keepdims=True)) / np.sqrt(f32(hs))
            dq = ds @ k
            dk = ds.transpose(0, 1, 3, 2) @ q
            dqkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C) for d in (dq, dk, dv)], -1)
            G[f"{l}.qkv_w"] = dqkv.reshape(-1, 3 * C).T @ a.reshape(-1, C)
            G[f"{l}.qkv_b"] = dqkv.reshape(-1, 3 * C).sum(0)
            da = dqkv @ P[f"{l}.qkv_w"]
            dx0, G[f"{l}.ln1_w"], G[f"{l}.ln1_b"] = ln_b(da, c1, P[f"{l}.ln1_w"])
            dx = dx0 + dr2
        G["wpe"] = np.zeros_like(P["wpe"])
        G["wpe"][:T] = dx.sum(0)
        np.add.at(G["wte"], tokens[~is_img], dx[~is_img])
        dproj = dx[is_img].reshape(B, Np, C)
        if mlp:
            G["p2_w"] = dproj.reshape(-1, C).T @ g1.reshape(-1, C)
            G["p2_b"] = dproj.reshape(-1, C).sum(0)
            dh1 = gelu_b(dproj @ P["p2_w"], h1, t1)
        else:
            dh1 = dproj
        G["p1_w"] = dh1.reshape(-1, C).T @ pe.reshape(-1, C)
        G["p1_b"] = dh1.reshape(-1, C).sum(0)
        dpe = dh1 @ P["p1_w"]
        G["patch_pos"] = dpe.sum(0)
        G["patch_w"] = dpe.reshape(-1, C).T @ x_pix.reshape(-1, PD)
        G["patch_b"] = dpe.reshape(-1, C).sum(0)
        # clip + AdamW
        norm = np.sqrt(sum(float((g * g).sum()) for g in G.values()))
        scale = f32(min(1.0, 1.0 / (norm + 1e-6)))
        lr, b1, b2_, eps, wd = f32(3e-3), f32(0.9), f32(0.95), f32(1e-8), f32(0.01)
        c1_, c2_ = f32(1 - 0.9 ** (t_step + 1)), f32(1 - 0.95 ** (t_step + 1))
        for name, g in G.items():
            g = g.astype(f32) * scale
            M[name] = b1 * M[name] + (1 - b1) * g
            Vm[name] = b2_ * Vm[name] + (1 - b2_) * g * g
            upd = (M[name] / c1_) / (np.sqrt(Vm[name] / c2_) + eps)
            if P[name].ndim == 2:
                upd = upd + wd * P[name]
            P[name] -= lr * upd
        return loss

    times, losses = [], []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        losses.append(float(step(s)))
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    kernel = "unknown"
    try:
        from threadpoolctl import threadpool_info
        info = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
        if info:
            kernel = f"{info[0].get('architecture')} threads={info[0].get('num_threads')}"
    except ImportError:
        pass
    return {"times": times, "first_loss": losses[0], "last_loss": losses[-1], "kernel": kernel}


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=False, help="vlmdata release binary")
    ap.add_argument("--work", default="/tmp/bench-train")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--numpy-child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.numpy_child:
        cfg = json.loads(args.numpy_child)
        print(json.dumps(numpy_side(cfg, cfg["steps"], cfg["warmup"])))
        return

    steps = 100 if args.quick else 400
    os.makedirs(args.work, exist_ok=True)
    env1 = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ws = os.path.join(args.work, "ws")
    if os.path.exists(ws):
        import shutil
        shutil.rmtree(ws)
    ours_cmd = [args.bin, "train-smoke", "--steps", str(steps), "--json", "--quiet", "--workspace", ws, "--no-gate",
                "--train-images", "1000" if args.quick else "4000", "--eval-images", "100"]
    t0 = time.perf_counter()
    out = subprocess.run(ours_cmd, env=env1, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ours failed ({out.returncode}): {out.stderr[-2000:]}")
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"ours: {' '.join(ours_cmd)}  ({time.perf_counter() - t0:.1f}s wall incl. pipeline)")

    cfg = {k: ours["model"][k] for k in ("batch", "seq_len", "vocab", "patches", "patch_dim", "channels", "layers",
                                        "heads", "projector")}
    cfg.update(steps=min(steps, 200), warmup=10)
    env_np = dict(env1)
    env_np.pop("OPENBLAS_CORETYPE", None)
    env_np.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, __file__, "--numpy-child", json.dumps(cfg)], env=env_np,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"numpy failed: {out.stderr[-2000:]}")
    npres = json.loads(out.stdout.strip().splitlines()[-1])
    np_ms = median(npres["times"]) * 1000
    ours_ms = ours["ms_per_step_median"]
    print(f"shapes: batch {cfg['batch']}, expanded seq {cfg['seq_len']}, vocab {cfg['vocab']}, "
          f"{cfg['patches']} patches of {cfg['patch_dim']}, C={cfg['channels']}, {cfg['layers']} layers, "
          f"{cfg['heads']} heads, projector {cfg['projector']}")
    print(f"numpy kernel: {npres['kernel']}; numpy loss {npres['first_loss']:.3f} -> {npres['last_loss']:.3f}")
    print(f"ours: {ours['steps']} steps, loss {ours['initial_loss']:.3f} -> {ours['final_loss']:.3f}, "
          f"{ours['tokens_per_s']:.0f} positions/s, CPU {1000 * ours['cpu_seconds'] / ours['steps']:.2f} ms/step")
    print(f"{'side':<8}{'ms/step (median)':>18}")
    print(f"{'ours':<8}{ours_ms:>18.2f}")
    print(f"{'numpy':<8}{np_ms:>18.2f}")
    print(f"ratio numpy/ours: {np_ms / ours_ms:.2f}x (above 1: ours is faster)")
    # The time limit of the learning gate lives here, not in the tests: train-smoke's default run is 2000 steps.
    print(f"default train-smoke (2000 steps) at this speed: {2000 * ours_ms / 1000:.0f} s of training (limit 240 s)")


if __name__ == "__main__":
    main()
