# Reference values for tests/test_sdid.py: the R package synthdid on Proposition 99.
#
# Usage (R >= 3.6, no packages needed beyond base R):
#   git clone https://github.com/synth-inference/synthdid   # read at commit of the mirror used
#   Rscript sdid_prop99.R synthdid/R ../data/california_prop99.csv sdid_prop99_r.csv
#   Rscript sdid_prop99.R synthdid/R ../data/california_prop99.csv - rng   # R's sample() check
#
# Sources the package's R files directly (R/synthdid.R, R/solver.R, R/utils.R, R/vcov.R) and writes,
# for synthdid_estimate, sc_estimate and did_estimate with their default options, the estimate, the
# unit weights omega (controls), the time weights lambda (pre-period years) and
# sqrt(vcov(fit, method = "placebo")) after set.seed(12345) (200 replications, the default).
args = commandArgs(trailingOnly = TRUE)
if (length(args) >= 4 && args[4] == "rng") {
  set.seed(12345); cat(sample(1:38), "\n")
  set.seed(7); cat(sample(1:1000)[1:20], "\n")
  quit()
}
for (f in c("synthdid.R", "solver.R", "utils.R", "vcov.R")) source(file.path(args[1], f))
panel = read.csv(args[2])
setup = panel.matrices(panel)
out = list()
for (est in c("synthdid_estimate", "sc_estimate", "did_estimate")) {
  fit = do.call(est, list(setup$Y, setup$N0, setup$T0))
  set.seed(12345)
  se = sqrt(vcov(fit, method = "placebo"))
  w = attr(fit, "weights")
  cat(sprintf("%s estimate=%.10f se=%.6f\n", est, c(fit), se))
  out[[est]] = data.frame(estimator = est, kind = c(rep("omega", setup$N0), rep("lambda", setup$T0)),
                          name = c(rownames(setup$Y)[1:setup$N0], colnames(setup$Y)[1:setup$T0]),
                          weight = c(w$omega, w$lambda), estimate = c(fit), placebo_se_r_seed12345 = se)
}
write.csv(do.call(rbind, out), args[3], row.names = FALSE)
