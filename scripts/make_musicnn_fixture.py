"""Make tests/fixtures/musicnn_msd.npz: MSD-musicnn features computed by TensorFlow itself (run once).

Needs TensorFlow, which the project venv never installs. Use a scratch environment:

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 librosa==0.11.0 soundfile
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0
    /tmp/tfenv/bin/python scripts/make_musicnn_fixture.py

The fixture holds a deterministic synthetic test signal (int16), the log-mel patches musicnn's own
`extractor.batch_data` makes from it, and the graph outputs of `musicnn.models.define_model` restored from the
wheel's MSD_musicnn checkpoint. `tests/test_musicnn.py` checks our PyTorch port against it.
"""
import argparse
import os
import tempfile

import numpy as np
import soundfile as sf

SR, SECONDS, HOP_FRAMES, N_FRAMES = 16000, 3.5, 21, 187
OUTPUTS = ("penultimate", "max_pool", "mean_pool", "taggram")


def test_signal(seed: int = 0) -> np.ndarray:
    """A few seconds of 'music': a chord progression of harmonic tones, decaying noise hits, a bass line."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * SECONDS)) / SR
    x = np.zeros_like(t)
    for i, root in enumerate((220.0, 174.6, 261.6, 196.0)):               # A, F, C, G
        seg = (t >= i * SECONDS / 4) & (t < (i + 1) * SECONDS / 4)
        for ratio in (1.0, 1.26, 1.5):                                    # major-ish triad
            for h in range(1, 6):
                x[seg] += 0.04 / h * np.sin(2 * np.pi * root * ratio * h * t[seg])
        x[seg] += 0.15 * np.sin(2 * np.pi * root / 4 * t[seg])            # bass
    for onset in np.arange(0, SECONDS, 0.25):                             # hi-hat / snare-like hits
        n = int(0.08 * SR)
        i0 = int(onset * SR)
        x[i0:i0 + n] += 0.2 * rng.normal(size=min(n, len(x) - i0)) * np.exp(-np.arange(min(n, len(x) - i0)) / 300)
    x += 0.005 * rng.normal(size=len(x))
    return np.round(np.clip(x / np.abs(x).max() * 0.7, -1, 1) * 32767).astype(np.int16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/musicnn_msd.npz")
    args = ap.parse_args()

    import tensorflow as tf
    from musicnn import extractor, models

    wave = test_signal()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "signal.wav")
        sf.write(path, wave, SR, subtype="PCM_16")
        batch, _ = extractor.batch_data(path, N_FRAMES, HOP_FRAMES)      # musicnn's own preprocessing

    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, _, _, _, _, _, mean_pool, max_pool, penultimate = models.define_model(x, is_training, "MSD_musicnn", 50)
        taggram = tf.nn.sigmoid(y)
    sess = tf.compat.v1.Session()
    sess.run(tf.compat.v1.global_variables_initializer())
    ckpt = os.path.join(os.path.dirname(models.__file__), "MSD_musicnn") + "/"
    tf.compat.v1.train.Saver().restore(sess, ckpt)
    outs = sess.run([penultimate, max_pool, mean_pool, taggram],
                    feed_dict={x: batch.astype(np.float32), is_training: False})

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    np.savez_compressed(args.out, wave=wave, sample_rate=SR, hop_frames=HOP_FRAMES, mel=batch.astype(np.float32),
                        tf_version=tf.__version__, **{k: np.asarray(v, np.float32) for k, v in zip(OUTPUTS, outs)})
    print(f"wrote {args.out}: mel {batch.shape} {batch.dtype}, " +
          ", ".join(f"{k} {np.shape(v)}" for k, v in zip(OUTPUTS, outs)))


if __name__ == "__main__":
    main()
