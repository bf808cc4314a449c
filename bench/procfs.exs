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

  # The machine's CPU time from /proc/stat in microseconds: {busy, total,
  # irq}, summed over every core (busy: all but idle and iowait; irq: the
  # hard and soft interrupt time in it, which no process is charged with,
  # such as loopback TCP's receive processing when the kernel accounts it
  # apart).
  def machine_us do
    with {:ok, st} <- File.read("/proc/stat"),
         ["cpu" | f] <- st |> String.split("\n", parts: 2) |> hd() |> String.split() do
      v = Enum.map(f, &String.to_integer/1)
      idle = Enum.at(v, 3) + Enum.at(v, 4)
      total = Enum.sum(Enum.take(v, 8))
      irq = Enum.at(v, 5) + Enum.at(v, 6)
      us = &(&1 * 1_000_000 / clk_tck())
      {us.(total - idle), us.(total), us.(irq)}
    else
      _ -> {0.0, 0.0, 0.0}
    end
  end

  # Scheduler wall time of this VM (erlang:statistics(scheduler_wall_time)):
  # the flag stays on only while the process that set it lives, so
  # sched_on/0 sets it from a holder process and returns that pid (send
  # it :off to turn the flag off again); sched_times/0 reads every
  # scheduler's {id, active, total} (busy-waiting is not active time).
  def sched_on do
    me = self()

    pid =
      spawn(fn ->
        :erlang.system_flag(:scheduler_wall_time, true)
        send(me, {:sched_on, self()})

        receive do
          :off -> :erlang.system_flag(:scheduler_wall_time, false)
        end
      end)

    receive do
      {:sched_on, ^pid} -> pid
    end
  end

  def sched_times, do: :erlang.statistics(:scheduler_wall_time_all)

  # Active time in microseconds between two sched_times/0 samples taken
  # `wall_us` apart, summed over the schedulers: each scheduler's share of
  # active time times the wall time.
  def sched_active_us(t0, t1, wall_us) do
    m0 = Map.new(t0, fn {id, a, t} -> {id, {a, t}} end)

    Enum.reduce(t1, 0.0, fn {id, a1, tt1}, acc ->
      case m0 do
        %{^id => {a0, tt0}} when tt1 > tt0 -> acc + (a1 - a0) / (tt1 - tt0) * wall_us
        _ -> acc
      end
    end)
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
