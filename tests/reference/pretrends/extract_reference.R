# Reference values for sveval.designs.pretrends from the R package pretrends (Roth 2022).
#
# Usage: Rscript extract_reference.R SRC OUT.json
#   SRC: a working tree of github.com/jonathandroth/pretrends (HEAD).
# Needs r-base-core and the package's dependencies from Debian (r-cran-mvtnorm r-cran-tmvtnorm
# r-cran-dplyr r-cran-ggplot2 r-cran-magrittr r-cran-jsonlite). The package's R files are
# sourced from SRC (not installed). Writes:
#   - the He & Wang (2017) event study shipped in data/HeAndWangResults.rda;
#   - the numbers its README prints (slope for 50% power; df_power and df_eventplot for the
#     linear trend with that slope; df_power for the quadratic trend 0.024 (t + 1)^2);
#   - the same quantities recomputed here with the package code (more digits), plus the slope
#     for 80% power and the power at a few slopes.
suppressMessages({library(magrittr); library(ggplot2)})
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]
out <- args[2]
for (f in c("power-calculation-fns.R", "pretrends-plot.R", "utility_functions.R")) {
  source(file.path(src, "R", f))
}
e <- new.env(); load(file.path(src, "data", "HeAndWangResults.rda"), envir = e)
hw <- e$HeAndWangResults
beta <- as.numeric(hw$beta); sigma <- unname(as.matrix(hw$sigma)); tVec <- as.numeric(hw$tVec)
ref <- -1
mat <- function(m) lapply(seq_len(nrow(m)), function(i) as.numeric(m[i, ]))
frame <- function(df) lapply(seq_len(nrow(df)), function(i) as.list(df[i, ]))

# Printed in README.md (the package's documented output)
readme <- readLines(file.path(src, "README.md"))
num <- function(line) as.numeric(strsplit(trimws(sub("^#>", "", line)), " +")[[1]])
slope_line <- readme[grep("^#> \\[1\\]", readme)[1]]
power_lines <- readme[grep("Power Bayes.Factor Likelihood.Ratio", readme) + 1]
ev_start <- grep("t +betahat +deltatrue +se meanAfterPretesting", readme)
ev <- t(sapply(readme[ev_start + 1:8], num))[, -1]
documented <- list(
  slope50 = num(slope_line)[2],
  linear_df_power = as.list(setNames(num(power_lines[1])[-1],
                                     c("Power", "Bayes.Factor", "Likelihood.Ratio"))),
  linear_df_eventplot = lapply(seq_len(nrow(ev)), function(i) as.list(setNames(
    ev[i, ], c("t", "betahat", "deltatrue", "se", "meanAfterPretesting")))),
  quadratic_df_power = as.list(setNames(num(power_lines[2])[-1],
                                        c("Power", "Bayes.Factor", "Likelihood.Ratio"))))

# Recomputed with the package code (pmvnorm is a randomised quasi-Monte Carlo integral: seeded)
set.seed(0)
slope50 <- slope_for_power(sigma = sigma, targetPower = 0.5, tVec = tVec, referencePeriod = ref)
set.seed(0)
slope80 <- slope_for_power(sigma = sigma, targetPower = 0.8, tVec = tVec, referencePeriod = ref)
set.seed(0)
lin <- pretrends(betahat = beta, sigma = sigma, tVec = tVec, referencePeriod = ref,
                 deltatrue = slope50 * (tVec - ref))
set.seed(0)
quad <- pretrends(betahat = beta, sigma = sigma, tVec = tVec, referencePeriod = ref,
                  deltatrue = 0.024 * (tVec - ref)^2)
pre <- which(tVec < ref)
powers <- lapply(c(0, 0.02, 0.05, 0.1), function(sl) {
  set.seed(0)
  list(slope = sl, power = rejectionProbability_NIS(betaPre = sl * (tVec[pre] - ref),
                                                    SigmaPre = sigma[pre, pre]))
})
computed <- list(slope50 = slope50, slope80 = slope80,
                 linear_df_power = frame(lin$df_power), linear_df_eventplot = frame(lin$df_eventplot),
                 quadratic_df_power = frame(quad$df_power),
                 quadratic_df_eventplot = frame(quad$df_eventplot), power_at_slope = powers)
jsonlite::write_json(list(
  source = "github.com/jonathandroth/pretrends: data/HeAndWangResults.rda, README.md, R/*.R",
  beta = beta, sigma = mat(sigma), tVec = tVec, referencePeriod = ref,
  documented = documented, computed = computed),
  out, auto_unbox = TRUE, digits = NA, pretty = TRUE)
