# Extract the HonestDiD documented examples into documented.json (inputs and printed bounds).
#
# Usage: Rscript extract_reference.R SRC OUT.json
#   SRC: a working tree of github.com/asheshrambachan/HonestDiD (HEAD) with, in addition,
#        data/VignetteResults.rda taken from commit fdadae33428a024df204c210da48cc5362966e89
#        (git show fdadae3:data/VignetteResults.rda > SRC/data/VignetteResults.rda).
# Needs only base R and jsonlite (Debian: r-base-core r-cran-jsonlite); HonestDiD itself is not run.
#
# Sources of the documented numbers:
#   - README.md, knitr cache README_cache/gfm/*: the objects the authors computed with the package
#     when rendering the README (inputs and sensitivity tables);
#   - data/VignetteResults.rda (old vignette, precomputed by vignettes/precompute.R);
#   - data/BCdata_EventStudy.rda, data/LWdata_EventStudy.rda: the vignette's event studies.
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]
out <- args[2]
cache <- file.path(src, "README_cache", "gfm")
lazy <- function(prefix) {
  f <- list.files(cache, pattern = paste0("^", prefix, "_.*\\.rdb$"), full.names = TRUE)
  e <- new.env()
  lazyLoad(sub("\\.rdb$", "", f[1]), envir = e)
  e
}
tab <- function(df) {
  df <- as.data.frame(df)
  lapply(seq_len(nrow(df)), function(i) as.list(df[i, ]))
}
mat <- function(m) unname(lapply(seq_len(nrow(m)), function(i) as.numeric(m[i, ])))

cases <- list()

# 1. Sun & Abraham event study (README "Sun and Abraham"), RM C-LF with gridPoints = 100.
e10 <- lazy("unnamed-chunk-10")
bv <- e10$beta_vcv
cases$medicaid_sunab_rm <- list(
  source = "README.md / README_cache chunk 10 (sunab_beta_vcv + createSensitivityResults_relativeMagnitudes)",
  betahat = as.numeric(bv$beta), sigma = mat(bv$sigma), rel_times = as.numeric(bv$cohorts),
  num_pre_periods = sum(bv$cohorts < 0), num_post_periods = sum(bv$cohorts > -1),
  method = "rm", grid_points = 100, l_vec = NULL,
  bounds = tab(e10$sensitivity_results), original = tab(e10$original_results))

# 2. Callaway & Sant'Anna event study (README), RM C-LF for e = 0, gridPoints = 100.
e12 <- lazy("unnamed-chunk-12")
es <- e12$es
inf <- es$inf.function$dynamic.inf.func.e
n <- nrow(inf)
V <- t(inf) %*% inf / n / n
ref <- which(es$egt == -1)
cases$medicaid_cs_rm <- list(
  source = "README.md / README_cache chunk 12 (did::aggte + honest_did, e = 0)",
  betahat = as.numeric(es$att.egt[-ref]), sigma = mat(V[-ref, -ref]),
  rel_times = as.numeric(es$egt[-ref]),
  num_pre_periods = sum(es$egt < -1), num_post_periods = sum(es$egt > -1),
  method = "rm", grid_points = 100, l_vec = NULL,
  bounds = tab(e12$sensitivity_results$robust_ci),
  original = tab(e12$sensitivity_results$orig_ci))

# 3. TWFE with a (fake) control (README "Regressions with controls"), SD FLCI.
#    The bounds are printed in README.md only (not an object): parsed from its text.
e8 <- lazy("unnamed-chunk-8")
readme <- readLines(file.path(src, "README.md"))
start <- grep("Subset the coefficients to exclude the control", readme)
rows <- grep("^    ## [0-9] ", readme)
rows <- rows[rows > start][1:6]
parsed <- lapply(strsplit(trimws(sub("^    ## ", "", readme[rows])), " +"), function(x) {
  list(lb = as.numeric(x[2]), ub = as.numeric(x[3]), method = x[4], Delta = x[5],
       M = as.numeric(x[6]))
})
cases$medicaid_twfe_control_sd <- list(
  source = "README.md 'Regressions with controls' (cached betahat/sigma, printed table)",
  betahat = as.numeric(e8$betahat), sigma = mat(e8$sigma),
  num_pre_periods = 5, num_post_periods = 2, method = "sd", l_vec = NULL,
  bounds = parsed, printed_digits = 3)

# 4. Lovenheim & Willen (vignette): Delta^SD FLCI for 15 years of exposure (l = e_17 of 23).
e <- new.env(); load(file.path(src, "data", "LWdata_EventStudy.rda"), envir = e)
lw <- e$LWdata_EventStudy
v <- new.env(); load(file.path(src, "data", "VignetteResults.rda"), envir = v)
vr <- v$VignetteResults
l17 <- rep(0, length(lw$postPeriodIndices)); l17[17] <- 1
cases$lw_sd <- list(
  source = "vignettes/precompute.R at fdadae3: LW_DeltaSD_RobustResults (data/VignetteResults.rda)",
  betahat = as.numeric(lw$betahat), sigma = mat(lw$sigma), rel_times = as.numeric(lw$timeVec),
  num_pre_periods = length(lw$prePeriodIndices), num_post_periods = length(lw$postPeriodIndices),
  method = "sd", l_vec = l17, bounds = tab(vr$LW_DeltaSD_RobustResults))

# 5. Benzarti & Carloni (vignette): original CI for the first post period.
e <- new.env(); load(file.path(src, "data", "BCdata_EventStudy.rda"), envir = e)
bc <- e$BCdata_EventStudy
cases$bc_original <- list(
  source = "vignettes/precompute.R at fdadae3: BC_OriginalResults (data/VignetteResults.rda)",
  betahat = as.numeric(bc$betahat), sigma = mat(bc$sigma), rel_times = as.numeric(bc$timeVec),
  num_pre_periods = length(bc$prePeriodIndices), num_post_periods = length(bc$postPeriodIndices),
  method = "original", l_vec = NULL, original = tab(vr$BC_OriginalResults))

# 6. README main example (TWFE without the control). Its betahat/sigma were not cached, but the
#    panel was (df_nonstaggered, chunk 8): re-estimate fixest::feols(dins ~ i(year, D, ref = 2013)
#    | stfips + year, cluster = "stfips") with base R: within OLS via lm() with both sets of
#    dummies, clustered sandwich, fixest's default small-sample factor G/(G-1) (n-1)/(n-K) with
#    K = regressors + year levels (state effects are nested in the clusters). The same code
#    reproduces the cached model with the control (coefficients and cov.scaled) and the README's
#    printed original CI for the average effect, which are checked here.
fit_cl <- function(df, with_control) {
  yrs <- setdiff(sort(unique(df$year)), 2013)
  X <- sapply(yrs, function(y) as.numeric(df$year == y) * df$D)
  if (with_control) X <- cbind(X, df$control)
  f <- stats::lm(df$dins ~ X + factor(df$stfips) + factor(df$year))
  k <- ncol(X)
  Z <- stats::model.matrix(f)[, !is.na(stats::coef(f))]
  u <- stats::resid(f)
  bread <- solve(crossprod(Z))
  meat <- Reduce(`+`, lapply(split(seq_len(nrow(Z)), df$stfips), function(i) {
    s <- colSums(Z[i, , drop = FALSE] * u[i]); s %o% s }))
  G <- length(unique(df$stfips)); n <- nrow(Z); K <- k + length(unique(df$year))
  V <- (bread %*% meat %*% bread)[2:(k + 1), 2:(k + 1)] * G / (G - 1) * (n - 1) / (n - K)
  list(b = unname(stats::coef(f)[2:(k + 1)]), V = unname(V))
}
df <- as.data.frame(e8$df_nonstaggered)
chk <- fit_cl(df, TRUE)
stopifnot(max(abs(chk$b - unname(stats::coef(e8$twfe_results)))) < 1e-12,
          max(abs(chk$V / unname(e8$twfe_results$cov.scaled) - 1)) < 1e-9)
main <- fit_cl(df, FALSE)
e4 <- lazy("unnamed-chunk-4"); e6 <- lazy("unnamed-chunk-6"); e7 <- lazy("unnamed-chunk-7")
orig_avg <- as.data.frame(e7$originalResults_avg)
lavg <- c(0.5, 0.5)
se <- sqrt(c(t(lavg) %*% main$V[6:7, 6:7] %*% lavg))
stopifnot(abs(sum(lavg * main$b[6:7]) - stats::qnorm(0.975) * se - orig_avg$lb) < 1e-10)
base <- list(betahat = main$b, sigma = mat(main$V), num_pre_periods = 5, num_post_periods = 2)
cases$medicaid_twfe_rm <- c(list(
  source = "README.md 'relative magnitudes' (README_cache chunk 4); inputs re-estimated"),
  base, list(method = "rm", grid_points = 1000, l_vec = NULL, bounds = tab(e4$delta_rm_results)))
cases$medicaid_twfe_sd <- c(list(
  source = "README.md 'smoothness' (README_cache chunk 6); inputs re-estimated"),
  base, list(method = "sd", l_vec = NULL, bounds = tab(e6$delta_sd_results)))
cases$medicaid_twfe_rm_avg <- c(list(
  source = "README.md 'average effects' (README_cache chunk 7); inputs re-estimated"),
  base, list(method = "rm", grid_points = 1000, l_vec = lavg,
             bounds = tab(e7$delta_rm_results_avg), original = tab(orig_avg)))

jsonlite::write_json(cases, out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null")
