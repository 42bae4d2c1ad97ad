# Reference: clustered TWFE standard errors from R (lm + clubSandwich), written as a fixture.
# Run from this folder: Rscript twfe_clubsandwich.R  (needs r-cran-clubsandwich, r-cran-sandwich)
suppressPackageStartupMessages({library(clubSandwich); library(sandwich)})
d <- read.csv("twfe_panel.csv")
fit <- lm(y ~ D + factor(unit) + factor(t), data = d)
out <- data.frame()
for (type in c("CR0", "CR1", "CR1S", "CR2")) {
  V <- vcovCR(fit, cluster = d$unit, type = type)
  ct <- coef_test(fit, vcov = V, test = if (type == "CR2") "Satterthwaite" else "naive-t", coefs = "D")
  out <- rbind(out, data.frame(type = type, estimate = unname(coef(fit)["D"]),
                               se = ct$SE, p_value = ct[[ncol(ct)]], df = if (type == "CR2") ct$df_Satt else NA))
}
# sandwich::vcovCL with HC1 (Stata-style) for a second opinion
V <- vcovCL(fit, cluster = ~unit, type = "HC1")
out <- rbind(out, data.frame(type = "vcovCL_HC1", estimate = unname(coef(fit)["D"]),
                             se = sqrt(V["D", "D"]), p_value = NA, df = NA))
write.csv(out, "twfe_clubsandwich.csv", row.names = FALSE)
print(out)
