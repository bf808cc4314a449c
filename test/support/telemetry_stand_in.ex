# :telemetry is an optional dependency of the library and is not installed
# where this suite was written (no hex). When the real application is
# absent, this file defines a stand-in for the part of its API the library
# calls (attach_many/4, detach/1, list_handlers/1, execute/3), so that what
# the library emits reaches handlers as it would through :telemetry; the
# stand-in is only for the tests. With the real :telemetry present it is
# not defined, and the tests run against the real one. It lives here
# (compiled with the test support code) so that every test file can
# attach handlers (telemetry_test.exs, model_run_test.exs).
unless Code.ensure_loaded?(:telemetry) do
  defmodule :telemetry do
    @moduledoc false
    @key {__MODULE__, :handlers}

    defp handlers, do: :persistent_term.get(@key, [])

    def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

    def attach_many(id, events, fun, config) do
      if Enum.any?(handlers(), &(&1.id == id)) do
        {:error, :already_exists}
      else
        new = for e <- events, do: %{id: id, event_name: e, function: fun, config: config}
        :persistent_term.put(@key, handlers() ++ new)
      end
    end

    def detach(id) do
      case Enum.split_with(handlers(), &(&1.id == id)) do
        {[], _} ->
          {:error, :not_found}

        {_, rest} ->
          :persistent_term.put(@key, rest)
      end
    end

    def list_handlers(prefix),
      do: Enum.filter(handlers(), &List.starts_with?(&1.event_name, prefix))

    def execute(event, measurements, metadata) do
      for %{event_name: ^event, function: f, config: c} <- handlers(),
          do: f.(event, measurements, metadata, c)

      :ok
    end
  end
end
