package com.ava.runtime;

/**
 * A failure of the runtime ({@link AlcEngine}, {@link AonClassifier}): its status code (the C
 * API's {@code AvaStatus}) and message.
 */
public class AlcException extends Exception {
    private static final long serialVersionUID = 1L;

    /** A NULL pointer, a bad string or a value out of range. */
    public static final int INVALID_ARGUMENT = 1;
    /** The file could not be read. */
    public static final int IO = 2;
    /** The archive is malformed, compressed, or failed sha256 verification. */
    public static final int ARCHIVE = 3;
    /**
     * The weights or config do not fit the model family (a Gemma archive opened as a classifier),
     * or a needed file is missing.
     */
    public static final int MODEL = 4;
    /** The tokenizer could not be loaded or failed. */
    public static final int TOKENIZER = 5;
    /** The request would go past the context length; the conversation is unchanged. */
    public static final int CONTEXT_FULL = 6;
    /** Another call is running on this engine. */
    public static final int BUSY = 7;
    /** A bug in the runtime. */
    public static final int INTERNAL = 8;

    private final int status;

    /** Made by the native code with the runtime's status and message. */
    public AlcException(int status, String message) {
        super(message);
        this.status = status;
    }

    /** One of the constants of this class. */
    public int status() {
        return status;
    }
}
