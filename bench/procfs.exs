# bench/procfs.exs - what the bench scripts read of an OS process from
# /proc: its CPU time and its resident memory. Loaded with Code.require_file
# by driver.exs (on the driver node), beam_baseline.exs (on the baseline
# node) and llm_baseline.exs (a plain `elixir` process), so that every side
# measures itself the same way.

defmodule Bench.Procfs do
  @moduledoc false

  # Clock ticks per second of /proc/PID/stat's utime and stime, asked of
  # getconf once per OS process (call it before a measured window so that
  # the window does not pay for the command).
  def clk_tck do
    case :persistent_term.get({__MODULE__, :clk_tck}, nil) do
      nil ->
        {t, 0} = System.cmd("getconf", ["CLK_TCK"])
        tck = String.to_integer(String.trim(t))
        :persistent_term.put({__MODULE__, :clk_tck}, tck)
        tck

      tck ->
        tck
    end
  end

  # CPU time (utime + stime) of an OS process, in microseconds; 0.0 once it
  # has gone. `ospid` is a number or "self".
  def cpu_us(ospid \\ "self") do
    with {:ok, st} <- File.read("/proc/#{ospid}/stat"),
         [_, rest] <- String.split(st, ") ", parts: 2) do
      f = String.split(rest)

      (String.to_integer(Enum.at(f, 11)) + String.to_integer(Enum.at(f, 12))) * 1_000_000 /
        clk_tck()
    else
      _ -> 0.0
    end
  end

  # Resident memory (VmRSS) of an OS process in KiB; 0 once it has gone.
  def rss_kb(ospid \\ "self"), do: status_kb(ospid, "VmRSS")

  # Its peak resident memory (VmHWM) in KiB; 0 once it has gone.
  def hwm_kb(ospid \\ "self"), do: status_kb(ospid, "VmHWM")

  defp status_kb(ospid, field) do
    with {:ok, s} <- File.read("/proc/#{ospid}/status"),
         [_, kb] <- Regex.run(~r/#{field}:\s+(\d+)/, s) do
      String.to_integer(kb)
    else
      _ -> 0
    end
  end
end
