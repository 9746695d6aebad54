package com.ava.runtime;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * An mALBERT intent classifier (an archive from {@code aon compile}) loaded by
 * {@code libava_runtime.so}: classifies utterances into intents with their probabilities.
 *
 * <p>Threads: {@link #classify} may run on any number of threads at once. {@link #close()}
 * waits for running classifications, then frees the native classifier; a forgotten classifier
 * is freed when garbage collected. Failures are {@link AlcException}s with the runtime's status
 * and message.
 */
public final class AonClassifier implements AutoCloseable {
    static {
        System.loadLibrary("ava_runtime");
    }

    /** How many intents {@link #classify(String)} lists in {@link Result#top}. */
    public static final int DEFAULT_TOP_K = 3;

    /** The intent of an out-of-scope utterance (see {@link Result#outOfScope}). */
    public static final String OUT_OF_SCOPE = "oos";

    /** One intent and its probability. */
    public static final class Intent {
        /** The intent's label. */
        public final String label;
        /** Its softmax probability, 0 to 1. */
        public final float score;
        /** Its class index (its position in {@link #labels()}). */
        public final int index;

        Intent(String label, float score, int index) {
            this.label = label;
            this.score = score;
            this.index = index;
        }

        @Override
        public String toString() {
            return label + " (" + score + ")";
        }
    }

    /** The classification of one utterance. */
    public static final class Result {
        /** The most likely intent, or {@link #OUT_OF_SCOPE} when {@link #outOfScope}. */
        public final String intent;
        /** The most likely intent's probability and class index (also when out of scope). */
        public final float score;
        public final int index;
        /** {@link #score} is below the archive's out-of-scope threshold ({@link #threshold()}). */
        public final boolean outOfScope;
        /** The most likely intents, best first (the first is {@link #intent}); unmodifiable. */
        public final List<Intent> top;
        /** Tokens the utterance became ({@code [CLS]} and {@code [SEP]} included). */
        public final int tokens;
        /** Milliseconds spent tokenizing and running the model. */
        public final double latencyMs;

        // v: tokens, latency ms, best index, best score, 1 if out of scope else 0, then index
        // and score of each top intent.
        Result(String[] labels, double[] v) {
            this.tokens = (int) v[0];
            this.latencyMs = v[1];
            this.index = (int) v[2];
            this.score = (float) v[3];
            this.outOfScope = v[4] != 0;
            this.intent = outOfScope ? OUT_OF_SCOPE : labels[index];
            List<Intent> top = new ArrayList<>();
            for (int i = 5; i + 1 < v.length; i += 2) {
                top.add(new Intent(labels[(int) v[i]], (float) v[i + 1], (int) v[i]));
            }
            this.top = Collections.unmodifiableList(top);
        }

        @Override
        public String toString() {
            return intent + " (" + score + ") " + top;
        }
    }

    // Classifications hold the read lock, close and finalize the write lock: the handle is
    // never freed while a native call uses it.
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final String[] labels;
    private final float threshold;
    private long handle;

    private AonClassifier(long handle, String[] labels, float threshold) {
        this.handle = handle;
        this.labels = labels;
        this.threshold = threshold;
    }

    /**
     * Opens an archive {@code .tar} (every sha256 verified) or an unpacked archive. Its kernel
     * library is never loaded: the classifier runs on the native backend.
     */
    public static AonClassifier open(String path) throws AlcException {
        return open(path, null, false);
    }

    /**
     * As {@link #open(String)}, loading the archive's kernel library for this device when the
     * archive is signed by one of {@code trustedKeys} (each {@code ava-ed25519-public-key <hex>}
     * or the 64 hex digits: pin your release key), or when {@code allowUnsignedKernels}.
     */
    public static AonClassifier open(
            String path, String[] trustedKeys, boolean allowUnsignedKernels) throws AlcException {
        return open(path, trustedKeys, allowUnsignedKernels, 0);
    }

    /**
     * As {@link #open(String, String[], boolean)}, classifying on {@code threads} threads of its
     * own (0: one per core, shared with the other classifiers; at most 1024).
     */
    public static AonClassifier open(
            String path, String[] trustedKeys, boolean allowUnsignedKernels, int threads)
            throws AlcException {
        long h = nativeOpen(path, trustedKeys, allowUnsignedKernels, threads);
        try {
            return new AonClassifier(h, nativeLabels(h), nativeThreshold(h));
        } catch (Throwable t) {
            nativeFree(h);
            throw t;
        }
    }

    /** Classifies {@code text}, listing the {@link #DEFAULT_TOP_K} most likely intents. */
    public Result classify(String text) throws AlcException {
        return classify(text, DEFAULT_TOP_K);
    }

    /** Classifies {@code text}, listing the {@code topK} most likely intents (0: none). */
    public Result classify(String text, int topK) throws AlcException {
        lock.readLock().lock();
        try {
            return new Result(labels, nativeClassify(live(), text, topK));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Every intent the classifier knows, by class index. */
    public String[] labels() {
        return labels.clone();
    }

    /**
     * The archive's out-of-scope threshold ({@code aon compile --oos-threshold}): a best score
     * below it makes an utterance out of scope. 0 when the archive has none.
     */
    public float threshold() {
        return threshold;
    }

    /** Waits for running classifications and frees the native classifier. */
    @Override
    public void close() {
        free();
    }

    @Override
    @SuppressWarnings({"deprecation", "removal"})
    protected void finalize() throws Throwable {
        // Finalizers may not exist in a future JDK, but Cleaner needs Android API 33.
        try {
            free();
        } finally {
            super.finalize();
        }
    }

    private void free() {
        lock.writeLock().lock();
        try {
            if (handle != 0) {
                nativeFree(handle);
                handle = 0;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    private long live() throws AlcException {
        long h = handle;
        if (h == 0) {
            throw new AlcException(AlcException.INVALID_ARGUMENT, "the classifier is closed");
        }
        return h;
    }

    private static native long nativeOpen(
            String path, String[] trustedKeys, boolean allowUnsignedKernels, int threads)
            throws AlcException;

    private static native void nativeFree(long handle);

    private static native String[] nativeLabels(long handle) throws AlcException;

    private static native float nativeThreshold(long handle) throws AlcException;

    private static native double[] nativeClassify(long handle, String text, int topK)
            throws AlcException;
}
