# Reference values for sveval's ITS estimators, from R (Debian packages r-base-core,
# r-cran-mass, r-cran-sandwich, r-cran-nlme, r-cran-jsonlite).
#
# Usage (from the repository root):
#   Rscript tests/reference/its/its_reference.R tests/reference/its
# Reads counts_design.csv, gaussian_design.csv (written by make_inputs.py) and
# tests/reference/data/sicily.csv (or $SICILY_CSV); writes its_reference.json.
suppressPackageStartupMessages({
  library(MASS); library(sandwich); library(nlme); library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args)) args[1] else "tests/reference/its"
sicily_csv <- Sys.getenv("SICILY_CSV", file.path(dir, "..", "data", "sicily.csv"))

tab <- function(est, se, df = NULL) {
  list(estimate = unname(est), se = unname(se), df = df)
}
coefs <- function(fit, V = vcov(fit), df = NULL) {
  b <- coef(fit); se <- sqrt(diag(V))
  out <- lapply(names(b), function(nm) list(estimate = unname(b[nm]), se = unname(se[nm])))
  names(out) <- names(b)
  out$.df <- df
  out
}

out <- list(R_version = R.version.string,
            packages = list(MASS = as.character(packageVersion("MASS")),
                            sandwich = as.character(packageVersion("sandwich")),
                            nlme = as.character(packageVersion("nlme"))))

## --- simulated counts (population offset) --------------------------------------------------
d <- read.csv(file.path(dir, "counts_design.csv"))
xs <- setdiff(names(d), c("y", "offset", "t", "const"))
f <- as.formula(paste("y ~ offset(offset) +", paste(xs, collapse = " + ")))
m_pois <- glm(f, family = poisson, data = d)
m_qp <- glm(f, family = quasipoisson, data = d)
m_nb <- glm.nb(f, data = d, control = glm.control(epsilon = 1e-12, maxit = 100))
out$counts <- list(
  poisson = coefs(m_pois),
  quasipoisson = c(coefs(m_qp, df = m_qp$df.residual), list(dispersion = summary(m_qp)$dispersion)),
  negbin = c(coefs(m_nb), list(theta = m_nb$theta))
)

## --- low counts: profile-likelihood intervals ------------------------------------------------
## The interval is the set of b with (D(b) - D(b_hat)) / phi <= cut, D(b) the deviance of the glm
## refitted with the coefficient fixed at b (an offset). Poisson: phi = 1, cut = qchisq(0.95, 1);
## quasi-Poisson: phi = Pearson dispersion, cut = qf(0.95, 1, n - p). Found by uniroot to 1e-10;
## R's own confint() (MASS profiling, spline-interpolated) is kept for the Poisson model too.
lo <- read.csv(file.path(dir, "lowcounts_design.csv"))
xs <- setdiff(names(lo), c("y", "offset", "t", "const"))
fl <- as.formula(paste("y ~ offset(offset) +", paste(xs, collapse = " + ")))
l_pois <- glm(fl, family = poisson, data = lo, control = glm.control(epsilon = 1e-12, maxit = 100))
l_qp <- glm(fl, family = quasipoisson, data = lo, control = glm.control(epsilon = 1e-12, maxit = 100))
prof_ci <- function(m, term, phi, cut) {
  X <- model.matrix(m); y <- lo$y; off <- lo$offset
  Xo <- X[, colnames(X) != term, drop = FALSE]; xj <- X[, term]
  dev0 <- deviance(m); b0 <- unname(coef(m)[term])
  g <- function(b) {
    r <- glm.fit(Xo, y, family = poisson(), offset = off + b * xj,
                 control = glm.control(epsilon = 1e-13, maxit = 200))
    (r$deviance - dev0) / phi - cut
  }
  se <- sqrt(diag(vcov(m)))[term]
  lower <- uniroot(g, c(b0 - 20 * se, b0), tol = 1e-11)$root
  upper <- uniroot(g, c(b0, b0 + 20 * se), tol = 1e-11)$root
  stat0 <- g(0) + cut
  list(estimate = b0, low = lower, high = upper, lr_stat_at_0 = stat0)
}
n_lo <- nrow(lo); p_lo <- length(coef(l_pois))
disp_lo <- summary(l_qp)$dispersion
ci_r <- suppressMessages(confint(l_pois, parm = c("level_1", "slope_1"), level = 0.95))
out$lowcounts <- list(
  n = n_lo, p = p_lo, dispersion = disp_lo,
  poisson = list(level_1 = prof_ci(l_pois, "level_1", 1, qchisq(0.95, 1)),
                 slope_1 = prof_ci(l_pois, "slope_1", 1, qchisq(0.95, 1))),
  quasipoisson = list(level_1 = prof_ci(l_qp, "level_1", disp_lo, qf(0.95, 1, n_lo - p_lo)),
                      slope_1 = prof_ci(l_qp, "slope_1", disp_lo, qf(0.95, 1, n_lo - p_lo))),
  poisson_confint = list(level_1 = unname(ci_r["level_1", ]), slope_1 = unname(ci_r["slope_1", ]))
)

## --- simulated Gaussian series --------------------------------------------------------------
g <- read.csv(file.path(dir, "gaussian_design.csv"))
xs <- setdiff(names(g), c("y", "offset", "t", "const"))
fg <- as.formula(paste("y ~", paste(xs, collapse = " + ")))
m_ols <- lm(fg, data = g)
L <- floor(4 * (nrow(g) / 100)^(2 / 9))
V_nw <- NeweyWest(m_ols, lag = L, prewhite = FALSE, adjust = TRUE)
m_gls <- gls(fg, data = g, correlation = corAR1(form = ~ t), method = "REML",
             control = glsControl(tolerance = 1e-10, msTol = 1e-10, returnObject = TRUE))
m_gls2 <- gls(fg, data = g, correlation = corARMA(form = ~ t, p = 2), method = "REML",
              control = glsControl(tolerance = 1e-10, msTol = 1e-10, returnObject = TRUE))
X <- model.matrix(fg, data = g)[, -1]
m_ar <- arima(g$y, order = c(1, 0, 0), xreg = X, include.mean = TRUE, method = "ML",
              optim.control = list(maxit = 2000, reltol = 1e-12))
ar_b <- coef(m_ar); ar_se <- sqrt(diag(m_ar$var.coef))
out$gaussian <- list(
  ols = coefs(m_ols, df = m_ols$df.residual),
  newey_west = c(coefs(m_ols, V = V_nw, df = m_ols$df.residual), list(lag = L)),
  gls_ar1 = c(coefs(m_gls, df = nrow(g) - length(coef(m_gls))),
              list(phi = unname(coef(m_gls$modelStruct$corStruct, unconstrained = FALSE)),
                   sigma = m_gls$sigma)),
  gls_ar2 = c(coefs(m_gls2, df = nrow(g) - length(coef(m_gls2))),
              list(phi = unname(coef(m_gls2$modelStruct$corStruct, unconstrained = FALSE)))),
  arima_ar1 = list(level_1 = list(estimate = unname(ar_b["level_1"]), se = unname(ar_se["level_1"])),
                   slope_1 = list(estimate = unname(ar_b["slope_1"]), se = unname(ar_se["slope_1"])),
                   ar1 = unname(ar_b["ar1"]))
)

## --- Sicily smoking ban (Lopez Bernal, Cummins & Gasparrini 2017) ----------------------------
s <- read.csv(sicily_csv)
harm <- function(x, nfreq, period) {
  do.call(cbind, lapply(1:nfreq, function(j) cbind(sin(2 * pi * j * x / period), cos(2 * pi * j * x / period))))
}
H <- harm(s$month, 2, 12); colnames(H) <- c("sin1", "cos1", "sin2", "cos2")
s <- cbind(s, H)
sm1 <- glm(aces ~ offset(log(stdpop)) + smokban + time, family = poisson, data = s)
sm2 <- glm(aces ~ offset(log(stdpop)) + smokban + time, family = quasipoisson, data = s)
sm3 <- glm(aces ~ offset(log(stdpop)) + smokban + time + sin1 + cos1 + sin2 + cos2,
           family = quasipoisson, data = s)
sm4 <- glm(aces ~ offset(log(stdpop)) + smokban + time + I(time - 36):smokban + sin1 + cos1 + sin2 + cos2,
           family = quasipoisson, data = s)
rr <- function(m, term, z = TRUE) {
  b <- coef(m)[term]; se <- sqrt(diag(vcov(m)))[term]
  q <- qnorm(0.975)   # Epi::ci.exp uses normal quantiles
  list(log_rr = unname(b), se = unname(se), rr = unname(exp(b)),
       ci_low = unname(exp(b - q * se)), ci_high = unname(exp(b + q * se)))
}
out$sicily <- list(
  model1_poisson = list(smokban = rr(sm1, "smokban")),
  model2_quasipoisson = list(smokban = rr(sm2, "smokban"), dispersion = summary(sm2)$dispersion),
  model3_quasipoisson_harmonic = list(smokban = rr(sm3, "smokban"), dispersion = summary(sm3)$dispersion,
                                      trend_per_year = unname(exp(12 * coef(sm3)["time"]))),
  model4_slope_change = list(smokban = rr(sm4, "smokban"), slope = rr(sm4, "smokban:I(time - 36)"))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           file.path(dir, "its_reference.json"))
cat("wrote", file.path(dir, "its_reference.json"), "\n")
