/* early_stop: ASHA and the median rule on synthetic curves: rungs, ties, NaN metrics, a run alone at
 * a rung, the grace count, higher-is-better metrics, and a replay worked out by hand. */
#include <check.h>
#include <math.h>

#include "experiments/early_stop.h"

static EarlyStopPolicy asha(int r, int eta, int max_steps) {
    return (EarlyStopPolicy){ES_ASHA, 0, r, eta, 0, max_steps};
}

START_TEST(t_rungs) {
    EarlyStopPolicy p = asha(50, 3, 1000);
    int s[8];
    ck_assert_int_eq(es_rungs(&p, s, 8), 3);
    ck_assert(s[0] == 50 && s[1] == 150 && s[2] == 450);
    p.max_steps = 450; /* no rung at the last step: the run ends there anyway */
    ck_assert_int_eq(es_rungs(&p, s, 8), 2);
    /* evaluations every 40 steps: rung 50 decided at 80, rung 150 at 160 */
    p.max_steps = 1000;
    ck_assert_int_eq(es_asha_rung_at(&p, 40, 80), 0);
    ck_assert_int_eq(es_asha_rung_at(&p, 80, 120), -1);
    ck_assert_int_eq(es_asha_rung_at(&p, 120, 160), 1);
    ck_assert_int_eq(es_asha_rung_at(&p, -1, 50), 0);
    ck_assert_int_eq(es_asha_rung_at(&p, -1, 500), 2); /* one evaluation past three rungs: the highest */
}
END_TEST

START_TEST(t_asha_cut) {
    EarlyStopPolicy p = asha(10, 3, 100);
    /* alone at a rung: continues, the cut is its own value */
    EsDecision d = es_asha_decide(&p, 0, 4.0, NULL, 0);
    ck_assert(!d.stop && d.threshold == 4.0 && d.n_compared == 1);
    /* six values, eta 3: index 6/3 - 1 = 1 of [1, 2, 3, 3.5, 4, 5] -> cut 2 */
    const double rec[] = {5, 1, 4, 2, 3};
    d = es_asha_decide(&p, 0, 3.5, rec, 5);
    ck_assert(d.stop && d.threshold == 2.0 && d.n_compared == 6);
    d = es_asha_decide(&p, 0, 1.5, rec, 5);
    ck_assert(!d.stop && d.threshold == 1.5);
    /* ties continue */
    d = es_asha_decide(&p, 0, 1.0, (const double[]){1.0, 1.0}, 2);
    ck_assert(!d.stop && d.threshold == 1.0);
    /* NaN: stopped itself, last among the recorded */
    d = es_asha_decide(&p, 0, NAN, NULL, 0);
    ck_assert(d.stop);
    d = es_asha_decide(&p, 1, 5.0, (const double[]){NAN, NAN}, 2);
    ck_assert(!d.stop && d.threshold == 5.0);
    /* higher is better (accuracy): [0.9, 0.85, 0.8], eta 2 -> index 0 -> cut 0.9 */
    p.higher_better = 1;
    p.reduction_factor = 2;
    d = es_asha_decide(&p, 0, 0.85, (const double[]){0.9, 0.8}, 2);
    ck_assert(d.stop && d.threshold == 0.9);
    d = es_asha_decide(&p, 0, 0.95, (const double[]){0.9, 0.8}, 2);
    ck_assert(!d.stop && d.threshold == 0.95);
}
END_TEST

START_TEST(t_median) {
    EarlyStopPolicy p = {ES_MEDIAN, 0, 20, 0, 2, 100};
    const int st[] = {10, 20, 30};
    /* others' running averages at step 20: (4+2)/2 = 3, (6+4)/2 = 5, (3+3)/2 = 3 -> median 3 */
    EsCurve others[4] = {{st, (const double[]){4, 2, 1}, 3}, {st, (const double[]){6, 4, 2}, 3},
                         {st, (const double[]){3, 3, 3}, 2}, {st, (const double[]){9}, 1}}; /* last: not at 20 */
    EsCurve run = {st, (const double[]){5, 3.5}, 2};
    EsDecision d = es_median_decide(&p, 20, &run, others, 4);
    ck_assert_msg(d.stop && d.threshold == 3.0 && d.value == 3.5 && d.n_compared == 3, "stop %d thr %g val %g n %d",
                  d.stop, d.threshold, d.value, d.n_compared);
    EsCurve tie = {st, (const double[]){5, 3.0}, 2}; /* equal to the median: continues */
    d = es_median_decide(&p, 20, &tie, others, 4);
    ck_assert(!d.stop);
    /* best so far, not the last value: 2.0 at step 10 beats the median though step 20 does not */
    EsCurve early = {st, (const double[]){2.0, 3.9}, 2};
    ck_assert(!es_median_decide(&p, 20, &early, others, 4).stop);
    /* before min_steps, or with fewer than grace_runs others at the step: no decision */
    ck_assert(!es_median_decide(&p, 10, &run, others, 4).stop);
    d = es_median_decide(&p, 20, &run, others, 1);
    ck_assert(!d.stop && d.n_compared == 1 && isnan(d.threshold));
    /* a NaN curve stops at the first decision step, others or not */
    EsCurve nan_run = {st, (const double[]){NAN, NAN}, 2};
    ck_assert(es_median_decide(&p, 20, &nan_run, others, 0).stop);
    /* an even count: the mean of the middle two */
    d = es_median_decide(&p, 20, &run, others, 2);
    ck_assert(d.threshold == 4.0 && !d.stop);
}
END_TEST

/* Four runs (one bracket, configurations 0-3) evaluated at 10, 20, 30, 40 of 40 steps; ASHA r 10,
 * eta 2: rungs 10 and 20.
 *   run 0: 5, 4, 3, 2   alone at both rungs: continues; final 2
 *   run 1: 6, 5, 4, 3   rung 10: [5, 6] idx 0 -> cut 5, stops at 10
 *   run 2: 4, 3, 2, 1   rung 10: [4, 5, 6] idx 0 -> 4, continues; rung 20: [3, 4] idx 0 -> 3, continues
 *   run 3: 4.5, 1, 0.5, 0.2   rung 10: [4, 4.5, 5, 6] idx 1 -> 4.5 (tie) continues; rung 20:
 *                              [1, 3, 4] idx 0 -> 1, continues; final 0.2 */
START_TEST(t_replay_by_hand) {
    const int st[] = {10, 20, 30, 40};
    const double v0[] = {5, 4, 3, 2}, v1[] = {6, 5, 4, 3}, v2[] = {4, 3, 2, 1}, v3[] = {4.5, 1, 0.5, 0.2};
    EsRun runs[4] = {{{st, v0, 4}, 0, 0, 2, 40}, {{st, v1, 4}, 0, 1, 3, 40}, {{st, v2, 4}, 0, 2, 1, 40},
                     {{st, v3, 4}, 0, 3, 0.2, 40}};
    EarlyStopPolicy p = asha(10, 2, 40);
    EsReplay r;
    es_replay(&p, runs, 4, &r);
    ck_assert(r.stop_step[0] == -1 && r.stop_step[1] == 10 && r.stop_step[2] == -1 && r.stop_step[3] == -1);
    ck_assert(r.n_stopped == 1 && r.steps_run == 130 && r.steps_total == 160);
    ck_assert(r.best_true == 3 && r.best_pruned == 3 && r.best_pruned_rank == 1);
    es_replay_free(&r);
    /* in another order the best is cut: run 3 first, then 2, 0, 1 */
    EsRun rev[4] = {runs[3], runs[2], runs[1], runs[0]};
    es_replay(&p, rev, 4, &r);
    /* rung 10: [4.5] go; [4, 4.5] idx 0 -> 4: run 2 goes, but at rung 20 [1, 3] idx 0 -> 1 stops it;
     * [4, 4.5, 6] idx 0 -> 4: run 1 (6) stops; [4, 4.5, 5, 6] idx 1 -> 4.5: run 0 (5) stops */
    ck_assert(r.stop_step[0] == -1 && r.stop_step[1] == 20 && r.stop_step[2] == 10 && r.stop_step[3] == 10);
    ck_assert(r.best_pruned == 3 && r.steps_run == 40 + 20 + 10 + 10);
    es_replay_free(&r);
    /* seeds in separate brackets never see each other */
    runs[1].bracket = 1;
    es_replay(&p, runs, 4, &r);
    ck_assert(r.stop_step[1] == -1);
    es_replay_free(&r);
}
END_TEST

Suite *early_stop_suite(void) {
    Suite *s = suite_create("early_stop");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, t_rungs);
    tcase_add_test(tc, t_asha_cut);
    tcase_add_test(tc, t_median);
    tcase_add_test(tc, t_replay_by_hand);
    suite_add_tcase(s, tc);
    return s;
}
