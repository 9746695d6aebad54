package com.ava.runtime;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

/**
 * AlcEngine on the host JVM against the built library (scripts/test-embedding):
 *   java -Djava.library.path=DIR com.ava.runtime.AlcEngineTest MODEL_DIR GOLDENS_JSON BAD_ARCHIVE
 * Greedy tokens of the goldens' first prompt through the listener, cancel from another thread,
 * reset, close, and exceptions carrying the runtime's message. No test framework: exits 1 on
 * the first failure.
 */
public final class AlcEngineTest {
    private static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("AlcEngineTest: FAILED: " + what);
            System.exit(1);
        }
    }

    /** The first `"key": [ ... ]` integer array of the goldens (the first prompt's). */
    private static int[] ids(String json, String key) {
        int start = json.indexOf('[', json.indexOf("\"" + key + "\""));
        String[] parts = json.substring(start + 1, json.indexOf(']', start)).split(",");
        int[] out = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = Integer.parseInt(parts[i].trim());
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        String json = new String(Files.readAllBytes(Paths.get(args[1])), StandardCharsets.UTF_8);
        int[] prompt = ids(json, "input_ids");
        int[] golden = ids(json, "greedy_ids");

        AlcEngine engine = AlcEngine.open(args[0], 256);
        {
            AlcEngine.Options greedy = new AlcEngine.Options();
            greedy.maxTokens = 32;
            greedy.ignoreEos = true;
            List<Integer> tokens = new ArrayList<>();
            StringBuilder streamed = new StringBuilder();
            AlcEngine.Result r = engine.generate(prompt, greedy, (piece, token) -> {
                streamed.append(piece);
                tokens.add(token);
                return true;
            });
            check(tokens.size() == golden.length, "token count " + tokens.size());
            for (int i = 0; i < golden.length; i++) {
                check(tokens.get(i) == golden[i], "token " + i + " differs from the golden");
            }
            check(r.text.equals(streamed.toString()), "result text is the streamed text");
            check(r.text.equals(engine.detokenize(golden)), "streamed text is the golden's");
            check(r.stopReason == AlcEngine.StopReason.MAX_TOKENS && r.tokens == 32, "result");
            check(java.util.Arrays.equals(
                    engine.tokenize(json.split("\"prompt\": \"")[1].split("\"")[0], true), prompt),
                    "tokenize");

            // Cancel from another thread while the listener holds the third token.
            engine.reset();
            AlcEngine.Options longer = new AlcEngine.Options();
            longer.maxTokens = 400;
            longer.ignoreEos = true;
            java.util.concurrent.CountDownLatch third = new java.util.concurrent.CountDownLatch(1);
            java.util.concurrent.CountDownLatch cancelled =
                    new java.util.concurrent.CountDownLatch(1);
            Thread canceller = new Thread(() -> {
                try {
                    third.await();
                    engine.cancel();
                    cancelled.countDown();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            canceller.start();
            int[] seen = {0};
            AlcEngine.Result c = engine.generate(prompt, longer, (piece, token) -> {
                if (++seen[0] == 3) {
                    third.countDown();
                    try {
                        cancelled.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                return true;
            });
            canceller.join();
            check(c.stopReason == AlcEngine.StopReason.CANCELLED && c.tokens == 3,
                    "cancelled at " + c.tokens);

            // A listener returning false stops too; an exception in it propagates.
            AlcEngine.Result stopped = engine.chat("Hello", longer, (piece, token) -> false);
            check(stopped.stopReason == AlcEngine.StopReason.CANCELLED, "listener stop");
            try {
                engine.chat("Hello", longer, (piece, token) -> {
                    throw new IllegalArgumentException("from the listener");
                });
                check(false, "the listener's exception propagates");
            } catch (IllegalArgumentException e) {
                check(e.getMessage().equals("from the listener"), "the listener's exception");
            }
            engine.close();
            engine.close(); // closing twice is fine
            try {
                engine.reset();
                check(false, "a closed engine refuses calls");
            } catch (AlcException e) {
                check(e.getMessage().contains("closed"), "closed: " + e.getMessage());
            }
        }

        try {
            AlcEngine.open(args[0], 16, new String[] {"not a key"}, false).close();
            check(false, "a malformed trusted key is refused");
        } catch (AlcException e) {
            check(e.status() == AlcException.INVALID_ARGUMENT, "trusted key: " + e.getMessage());
        }
        AlcEngine.open(args[0], 16, new String[0], false).close();
        try (AlcEngine two = AlcEngine.open(args[0], 256, null, false, 2)) {
            AlcEngine.Options greedy = new AlcEngine.Options();
            greedy.maxTokens = 32;
            greedy.ignoreEos = true;
            List<Integer> tokens = new ArrayList<>();
            two.generate(prompt, greedy, (piece, token) -> tokens.add(token));
            for (int i = 0; i < golden.length; i++) {
                check(tokens.get(i) == golden[i], "2 threads: token " + i + " differs");
            }
        }
        for (AlcEngine.KvCache kv : AlcEngine.KvCache.values()) {
            if (kv == AlcEngine.KvCache.Q8) {
                continue; // lossy: the greedy golden holds for f32 and f16
            }
            try (AlcEngine e = AlcEngine.open(args[0], 256, null, false, 0, kv)) {
                AlcEngine.Options greedy = new AlcEngine.Options();
                greedy.maxTokens = 32;
                greedy.ignoreEos = true;
                List<Integer> tokens = new ArrayList<>();
                e.generate(prompt, greedy, (piece, token) -> tokens.add(token));
                for (int i = 0; i < golden.length; i++) {
                    check(tokens.get(i) == golden[i], kv + " KV cache: token " + i + " differs");
                }
            }
        }
        try {
            AlcEngine.open(args[0], 16, null, false, -1).close();
            check(false, "a negative thread count is refused");
        } catch (AlcException e) {
            check(e.status() == AlcException.INVALID_ARGUMENT, "threads: " + e.getMessage());
        }
        expectFailure("/nonexistent/model.tar", AlcException.IO, "/nonexistent/model.tar");
        expectFailure(args[2], AlcException.ARCHIVE, "");
        System.out.println("AlcEngineTest: ok");
    }

    private static void expectFailure(String path, int status, String inMessage) {
        try {
            AlcEngine.open(path).close();
            check(false, "opening " + path + " fails");
        } catch (AlcException e) {
            check(e.status() == status, path + ": status " + e.status() + ": " + e.getMessage());
            check(!e.getMessage().isEmpty() && e.getMessage().contains(inMessage),
                    path + ": message " + e.getMessage());
        }
    }
}
