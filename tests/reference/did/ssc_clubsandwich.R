# Reference: clubSandwich CR1 / CR1S / CR2 (Satterthwaite df) / CR3 on the dummy-variable
# regressions of the Card-Krueger 2x2 and the castle-doctrine TWFE, written as a fixture.
# Run from this folder after make_ssc_panels.py: Rscript ssc_clubsandwich.R
# (needs r-cran-clubsandwich, r-cran-sandwich)
suppressPackageStartupMessages({library(clubSandwich)})
one <- function(case, fit, cluster, coef) {
  out <- data.frame()
  for (type in c("CR0", "CR1", "CR1S", "CR2", "CR3")) {
    V <- tryCatch(vcovCR(fit, cluster = cluster, type = type), error = function(e) NULL)
    if (is.null(V)) next
    test <- if (type == "CR2") "Satterthwaite" else "naive-t"
    ct <- coef_test(fit, vcov = V, test = test, coefs = coef)
    out <- rbind(out, data.frame(case = case, type = type, estimate = unname(coef(fit)[coef]),
                                 se = ct$SE, df = if (type == "CR2") ct$df_Satt else NA,
                                 n = nobs(fit), clusters = length(unique(cluster))))
  }
  out
}
ck <- read.csv("card_krueger_fte.csv")
res <- data.frame()
for (v in c("fte", "fte_closed0")) {
  d <- ck[!is.na(ave(ck[[v]], ck$store, FUN = function(s) all(!is.na(s)))) &
            ave(ck[[v]], ck$store, FUN = function(s) all(!is.na(s))) == 1, ]
  d$y <- d[[v]]
  d$D <- as.integer(d$nj == 1 & d$wave == 2)
  fit <- lm(y ~ D + factor(store) + factor(wave), data = d)
  res <- rbind(res, one(paste0("card_krueger_", v), fit, d$store, "D"))
}
cs <- read.csv("castle.csv")
fit <- lm(l_homicide ~ post + factor(sid) + factor(year), data = cs)
res <- rbind(res, one("castle", fit, cs$sid, "post"))
tw <- read.csv("twfe_panel.csv")
fit <- lm(y ~ D + factor(unit) + factor(t), data = tw)
res <- rbind(res, one("twfe_panel", fit, tw$unit, "D"))
write.csv(res, "ssc_clubsandwich.csv", row.names = FALSE)
print(res)
# Poisson with population exposure on the castle homicide counts (clubSandwich treats a glm as
# the weighted least-squares problem at convergence)
cs$count <- round(cs$homicide * cs$popwt / 1e5)  # homicide is a rate per 100,000
pf <- glm(count ~ post + factor(sid) + factor(year) + offset(log(popwt)), family = poisson, data = cs)
res <- rbind(res, one("castle_poisson", pf, cs$sid, "post"))
write.csv(res, "ssc_clubsandwich.csv", row.names = FALSE)
print(res[res$case == "castle_poisson", ])
