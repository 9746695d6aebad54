package com.ava.runtime;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * AonClassifier on the host JVM against the built library (scripts/test-embedding):
 *   java -Djava.library.path=DIR com.ava.runtime.AonClassifierTest ARCHIVE EXPECTED_TSV
 *       GEMMA_ARCHIVE BAD_ARCHIVE
 * EXPECTED_TSV is what `aon classify --top 3` says of each utterance (the format of
 * runtime/tests/c/classify_test.c). Every utterance must match it, out-of-scope ones included;
 * classifying from several threads, close, and exceptions carrying the runtime's message are
 * checked too. No test framework: exits 1 on the first failure.
 */
public final class AonClassifierTest {
    private static final float TOLERANCE = 1e-5f;

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("AonClassifierTest: FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        List<String[]> expected = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get(args[1]), StandardCharsets.UTF_8)) {
            expected.add(line.split("\t"));
        }
        check(!expected.isEmpty(), "no utterances in " + args[1]);

        AonClassifier classifier = AonClassifier.open(args[0]);
        check(classifier.threshold() > 0, "the archive's out-of-scope threshold");
        List<AonClassifier.Result> results = new ArrayList<>();
        int outOfScope = 0;
        for (String[] e : expected) {
            AonClassifier.Result r = classifier.classify(e[0]);
            String what = "\"" + e[0] + "\": " + r + " vs " + String.join(" ", e);
            check(r.intent.equals(e[1]), what);
            check(Math.abs(r.score - Float.parseFloat(e[2])) <= TOLERANCE, what);
            check(r.outOfScope == e[3].equals("1"), what);
            check(r.outOfScope == (r.score < classifier.threshold()), what);
            check(r.top.size() == AonClassifier.DEFAULT_TOP_K, what);
            for (int k = 0; k < r.top.size(); k++) {
                check(r.top.get(k).label.equals(e[4 + 2 * k]), what);
                check(Math.abs(r.top.get(k).score - Float.parseFloat(e[5 + 2 * k])) <= TOLERANCE,
                        what);
            }
            check(r.top.get(0).index == r.index && r.tokens >= 2 && r.latencyMs > 0, what);
            check(classifier.labels()[r.index].equals(r.top.get(0).label), "labels by index");
            check(r.intent.equals(r.outOfScope ? AonClassifier.OUT_OF_SCOPE : r.top.get(0).label),
                    what);
            outOfScope += r.outOfScope ? 1 : 0;
            results.add(r);
        }
        check(outOfScope > 0 && outOfScope < expected.size(), outOfScope + " out of scope");
        check(classifier.classify(expected.get(0)[0], 0).top.isEmpty(), "top 0");
        check(classifier.classify(expected.get(0)[0], 1000).top.size()
                == classifier.labels().length, "top K past the labels");
        try {
            classifier.classify(expected.get(0)[0], -1);
            check(false, "a negative top K is refused");
        } catch (AlcException e) {
            check(e.status() == AlcException.INVALID_ARGUMENT, "negative top K: " + e);
        }
        try {
            classifier.classify(null);
            check(false, "a null utterance is refused");
        } catch (AlcException e) {
            check(e.getMessage().contains("text"), "null text: " + e.getMessage());
        }

        // Several threads at once give the same results as one.
        ExecutorService pool = Executors.newFixedThreadPool(4);
        List<Future<Boolean>> same = new ArrayList<>();
        for (int t = 0; t < 8; t++) {
            same.add(pool.submit(() -> {
                for (int i = 0; i < expected.size(); i++) {
                    AonClassifier.Result r = classifier.classify(expected.get(i)[0]);
                    if (r.index != results.get(i).index || r.score != results.get(i).score) {
                        return false;
                    }
                }
                return true;
            }));
        }
        for (Future<Boolean> f : same) {
            check(f.get(), "classifying from several threads");
        }
        pool.shutdown();

        classifier.close();
        classifier.close(); // closing twice is fine
        try {
            classifier.classify("hello");
            check(false, "a closed classifier refuses calls");
        } catch (AlcException e) {
            check(e.getMessage().contains("closed"), "closed: " + e.getMessage());
        }

        // A forgotten classifier is freed by the garbage collector.
        AonClassifier.open(args[0]);
        System.gc();
        System.runFinalization();

        expectFailure("/nonexistent/model.tar", AlcException.IO, "/nonexistent/model.tar");
        expectFailure(args[2], AlcException.MODEL, "not an mALBERT intent classifier");
        expectFailure(args[3], AlcException.ARCHIVE, "");
        System.out.println("AonClassifierTest: ok (" + expected.size()
                + " utterances match aon classify)");
    }

    private static void expectFailure(String path, int status, String inMessage) {
        try {
            AonClassifier.open(path).close();
            check(false, "opening " + path + " fails");
        } catch (AlcException e) {
            check(e.status() == status, path + ": status " + e.status() + ": " + e.getMessage());
            check(!e.getMessage().isEmpty() && e.getMessage().contains(inMessage),
                    path + ": message " + e.getMessage());
        }
    }
}
