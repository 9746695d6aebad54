package com.ava.runtime;

/**
 * A Gemma 3 archive loaded by {@code libava_runtime.so}, with one conversation: generate with a
 * streaming listener, cancel from any thread, reset, close.
 *
 * <p>Threads: one generation at a time (a second {@code generate}/{@code chat} from another
 * thread waits for the first). {@link #cancel()} may be called from any thread, and from the
 * listener. {@link #close()} cancels a running generation and waits for it. Native memory is
 * freed by {@code close()}, or when a forgotten engine is garbage collected.
 */
public final class AlcEngine implements AutoCloseable {
    static {
        System.loadLibrary("ava_runtime");
    }

    /** Receives each generated piece on the generating thread; return false to stop. */
    public interface TokenListener {
        boolean onToken(String piece, int token);
    }

    /** What to generate; the defaults are greedy decoding of at most 256 tokens. */
    public static final class Options {
        public int maxTokens = 256;
        /** 0 means greedy. */
        public float temperature = 0f;
        /** 0: off. */
        public int topK = 0;
        /** 1: off. */
        public float topP = 1f;
        /** 0: off. */
        public float minP = 0f;
        /** 1: off. */
        public float repeatPenalty = 1f;
        public int repeatLastN = 64;
        public long seed = 0;
        /** Keep going past end-of-sequence and {@code <end_of_turn>}. */
        public boolean ignoreEos = false;
        /** Stop when one of these appears (it is not emitted); may be null. */
        public String[] stopStrings = null;
    }

    /** Why a generation stopped (the C API's {@code AvaStopReason}, in its order). */
    /** How the KV cache stores keys and values (the C header's {@code AvaKvCache}). */
    public enum KvCache {
        /** 32-bit floats: exact, the most memory. */
        F32(0),
        /** Half floats: half of f32 (the default). */
        F16(1),
        /** int8 with one scale per head row: about a quarter of f32. */
        Q8(2);

        final int code;

        KvCache(int code) {
            this.code = code;
        }
    }

    public enum StopReason { EOS, END_OF_TURN, MAX_TOKENS, STOP_STRING, CANCELLED }

    /** The outcome of one generation. */
    public static final class Result {
        public final String text;
        public final StopReason stopReason;
        public final int tokens;
        /** Positions of the context used after this turn, and the context length. */
        public final int position, context;
        public final int prefillTokens, decodeTokens;
        public final double prefillMs, decodeMs, timeToFirstTokenMs;

        Result(String text, double[] v) {
            this.text = text;
            this.stopReason = StopReason.values()[(int) v[0]];
            this.tokens = (int) v[1];
            this.position = (int) v[2];
            this.context = (int) v[3];
            this.prefillTokens = (int) v[4];
            this.decodeTokens = (int) v[5];
            this.prefillMs = v[6];
            this.decodeMs = v[7];
            this.timeToFirstTokenMs = v[8];
        }
    }

    // `handle` changes only under both `this` (held by generating calls) and `stateLock`
    // (held by cancel and the short calls), so no native call ever sees a freed handle.
    private final Object stateLock = new Object();
    private long handle;
    private boolean running;

    private AlcEngine(long handle) {
        this.handle = handle;
    }

    /** Opens an archive {@code .tar} (every sha256 verified) or an unpacked archive. */
    public static AlcEngine open(String path) throws AlcException {
        return open(path, 0);
    }

    /**
     * As {@link #open(String)} with a context of {@code contextLength} tokens (0: 4096). The
     * archive's kernel library is never loaded: the model runs on the native backend.
     */
    public static AlcEngine open(String path, int contextLength) throws AlcException {
        return open(path, contextLength, null, false);
    }

    /**
     * As {@link #open(String, int)}, loading the archive's kernel library for this device when
     * the archive is signed by one of {@code trustedKeys} (each {@code ava-ed25519-public-key
     * <hex>} or the 64 hex digits: pin your release key), or when {@code allowUnsignedKernels}.
     */
    public static AlcEngine open(
            String path, int contextLength, String[] trustedKeys, boolean allowUnsignedKernels)
            throws AlcException {
        return open(path, contextLength, trustedKeys, allowUnsignedKernels, 0);
    }

    /**
     * As {@link #open(String, int, String[], boolean)}, running the model on {@code threads}
     * threads of its own (0: one per core, shared with the other engines; at most 1024).
     */
    public static AlcEngine open(
            String path,
            int contextLength,
            String[] trustedKeys,
            boolean allowUnsignedKernels,
            int threads)
            throws AlcException {
        return open(path, contextLength, trustedKeys, allowUnsignedKernels, threads, KvCache.F16);
    }

    /**
     * As {@link #open(String, int, String[], boolean, int)}, the KV cache stored as {@code
     * kvCache} (the other overloads store it as {@link KvCache#F16}).
     */
    public static AlcEngine open(
            String path,
            int contextLength,
            String[] trustedKeys,
            boolean allowUnsignedKernels,
            int threads,
            KvCache kvCache)
            throws AlcException {
        return new AlcEngine(
                nativeOpen(
                        path,
                        contextLength,
                        trustedKeys,
                        allowUnsignedKernels,
                        threads,
                        kvCache.code));
    }

    /** Continues the conversation with a user turn (chat template applied) and answers it. */
    public Result chat(String userText, Options options, TokenListener listener)
            throws AlcException {
        return run(null, userText, options, listener);
    }

    /** Runs token ids after the conversation so far and generates. */
    public Result generate(int[] promptIds, Options options, TokenListener listener)
            throws AlcException {
        return run(promptIds, null, options, listener);
    }

    /** Asks the running generation to stop after its current token; never blocks. */
    public void cancel() {
        synchronized (stateLock) {
            if (handle != 0) {
                nativeCancel(handle);
            }
        }
    }

    /** Forgets the conversation. */
    public synchronized void reset() throws AlcException {
        notInListener();
        nativeReset(live());
    }

    /** Token ids of {@code text}; {@code addSpecial} adds {@code <bos>}. */
    public int[] tokenize(String text, boolean addSpecial) throws AlcException {
        synchronized (stateLock) {
            return nativeTokenize(live(), text, addSpecial);
        }
    }

    /** The text of token ids (special tokens skipped). */
    public String detokenize(int[] ids) throws AlcException {
        synchronized (stateLock) {
            return nativeDetokenize(live(), ids);
        }
    }

    /** Cancels a running generation, waits for it, and frees the native engine. */
    @Override
    public void close() {
        cancel();
        synchronized (this) {
            notInListener();
            free();
        }
    }

    @Override
    @SuppressWarnings({"deprecation", "removal"})
    protected void finalize() throws Throwable {
        // Finalizers may not exist in a future JDK, but Cleaner needs Android API 33.
        try {
            synchronized (this) {
                free();
            }
        } finally {
            super.finalize();
        }
    }

    private synchronized Result run(int[] ids, String text, Options options,
            TokenListener listener) throws AlcException {
        notInListener();
        long h = live();
        StringBuilder out = new StringBuilder();
        TokenListener collect = (piece, token) -> {
            out.append(piece);
            return listener == null || listener.onToken(piece, token);
        };
        running = true;
        try {
            double[] r = ids != null
                    ? nativeGenerate(h, ids, options, collect)
                    : nativeChat(h, text, options, collect);
            return new Result(out.toString(), r);
        } finally {
            running = false;
        }
    }

    private void free() {
        synchronized (stateLock) {
            if (handle != 0) {
                nativeFree(handle);
                handle = 0;
            }
        }
    }

    private long live() throws AlcException {
        long h = handle;
        if (h == 0) {
            throw new AlcException(AlcException.INVALID_ARGUMENT, "the engine is closed");
        }
        return h;
    }

    private void notInListener() {
        if (running) {
            throw new IllegalStateException("not allowed from inside the TokenListener");
        }
    }

    private static native long nativeOpen(
            String path,
            int context,
            String[] trustedKeys,
            boolean allowUnsignedKernels,
            int threads,
            int kvCache)
            throws AlcException;

    private static native void nativeFree(long handle);

    private static native void nativeCancel(long handle);

    private static native void nativeReset(long handle) throws AlcException;

    private static native int[] nativeTokenize(long handle, String text, boolean addSpecial)
            throws AlcException;

    private static native String nativeDetokenize(long handle, int[] ids) throws AlcException;

    private static native double[] nativeGenerate(long handle, int[] prompt, Options options,
            TokenListener listener) throws AlcException;

    private static native double[] nativeChat(long handle, String text, Options options,
            TokenListener listener) throws AlcException;
}
