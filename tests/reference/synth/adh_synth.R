# Reference values for the covariate synthetic control: Abadie, Diamond & Hainmueller (2010) with
# the R package Synth's algorithm (nested V optimisation, optimx Nelder-Mead + BFGS from equal and
# regression-based starting values, ipop for W).
#
# Usage (R with the Debian packages r-cran-kernlab and r-cran-optimx; Synth itself is not packaged
# for Debian, so its R files are sourced from a checkout of github.com/cran/Synth, version 1.1-8,
# commit 8e171751211b4ff3c8686933b412d05021799162):
#   Rscript adh_synth.R Synth/R /path/to/smoking_adh.csv adh_synth_r.csv
# smoking_adh.csv: shared/reference-data (the tidysynth copy of the ADH panel).
suppressMessages({ library(kernlab); library(optimx) })
args = commandArgs(trailingOnly = TRUE)
for (f in c("synth.R", "fn.V.R", "collect.optimx.R", "dataprep.R", "spec.pred.func.R")) source(file.path(args[1], f))
d = read.csv(args[2])
d$state = as.character(d$state)
ids = sort(unique(d$state))
d$id = match(d$state, ids)
dp = dataprep(foo = d,
  predictors = c("lnincome", "retprice", "age15to24"), predictors.op = "mean",
  time.predictors.prior = 1980:1988,
  special.predictors = list(list("beer", 1984:1988, "mean"), list("cigsale", 1975, "mean"),
                            list("cigsale", 1980, "mean"), list("cigsale", 1988, "mean")),
  dependent = "cigsale", unit.variable = "id", unit.names.variable = "state", time.variable = "year",
  treatment.identifier = match("California", ids), controls.identifier = setdiff(seq_along(ids), match("California", ids)),
  time.optimize.ssr = 1970:1988, time.plot = 1970:2000)
s = capture.output(so <- synth(dp))
w = data.frame(kind = "w", name = ids[as.integer(rownames(so$solution.w))], value = as.numeric(so$solution.w))
v = data.frame(kind = "v", name = rownames(dp$X1), value = as.numeric(so$solution.v))
x = data.frame(kind = "x1", name = rownames(dp$X1), value = as.numeric(dp$X1))
l = data.frame(kind = "loss", name = c("loss_v", "loss_w"), value = c(so$loss.v, so$loss.w))
out = rbind(w, v, x, l)
write.csv(out, args[3], row.names = FALSE)
print(out[out$value > 0.001 | out$kind != "w", ], digits = 6)
