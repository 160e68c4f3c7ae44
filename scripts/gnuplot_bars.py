"""A bar chart of one or two series per label through gnuplot, for the benchmark scripts' side-by-side figures."""
import subprocess
import sys


def plot_bars(png, title, ylabel, labels, series, logscale=False):
    """series: {name: [value or None per label]} (one or two); writes png, or says on stderr why not."""
    data = png[:-len(".png")] + ".dat" if png.endswith(".png") else png + ".dat"
    names = list(series)
    with open(data, "w") as f:
        f.write("label " + " ".join(names) + "\n")
        for i, label in enumerate(labels):
            f.write(label + " " + " ".join("NaN" if series[n][i] is None else repr(series[n][i]) for n in names) + "\n")
    plots = ", ".join(f"'{data}' using {k + 2}" + (":xtic(1)" if k == 0 else "") + f" title columnheader({k + 2})"
                      for k in range(len(names)))
    script = f"""set terminal pngcairo size 1400,600
set output '{png}'
set title '{title}'
set style data histograms
set style fill solid 0.8
{"set logscale y" if logscale else ""}
set xtics rotate by -45 font ',8'
set ylabel '{ylabel}'
set key top right
plot {plots}
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print(f"wrote {png}")
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"no plot: {error}", file=sys.stderr)
