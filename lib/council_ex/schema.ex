defmodule CouncilEx.Schema do
  @moduledoc """
  The C core's rules as data: what `council_schema_json()` in
  `c_src/include/council.h` says, read at compile time from
  `priv/schema.json` (which `make` writes from the core itself). The round
  types, providers, limit maxima, topic prefix and default registry that
  the library checks or uses come from here, so they are defined once, in
  the core.

      iex> CouncilEx.Schema.topic_prefix()
      "council_ex:run:"
      iex> CouncilEx.Schema.limit_max(:max_attempts)
      10
  """

  @path Path.expand("../../priv/schema.json", __DIR__)
  @external_resource @path

  @schema (case File.read(@path) do
             {:ok, text} ->
               {:ok, schema} = CouncilEx.JSON.decode(text)
               schema

             {:error, reason} ->
               raise CompileError,
                 description:
                   "council_ex: #{@path} is missing (#{:file.format_error(reason)}): " <>
                     "it is written by `make priv`, which `mix compile` runs first"
           end)

  @doc "The whole schema, as decoded (binary keys)."
  @spec all() :: map
  def all, do: @schema

  @doc "The prefix of a run's topic: `topic_prefix() <> run_id`."
  @spec topic_prefix() :: binary
  def topic_prefix, do: unquote(@schema["topic_prefix"])

  @doc "The registry runs are registered in when none is given."
  @spec default_registry() :: binary
  def default_registry, do: unquote(@schema["default_registry"])

  @doc "The round types the core knows, as atoms, in the core's order."
  @spec round_types() :: [atom]
  def round_types, do: unquote(Enum.map(@schema["round_types"], &String.to_atom/1))

  @doc "The providers built into the core (the C node adds `beam`), as atoms."
  @spec providers() :: [atom]
  def providers, do: unquote(Enum.map(@schema["providers"], &String.to_atom/1))

  @doc "The model providers (members that call a model API), as atoms."
  @spec model_providers() :: [atom]
  def model_providers, do: unquote(Enum.map(@schema["model_providers"], &String.to_atom/1))

  @doc """
  What a spec is made of, as the core reads it (`"spec"` of the schema,
  binary keys): `"keys"` (the top-level keys, each with the kind of its
  value), `"min_members"`, `"min_rounds"`, `"unique_member_key"`,
  `"min_name_bytes"`, `"max_name_bytes"` and the size maxima.
  """
  @spec spec_rules() :: map
  def spec_rules, do: unquote(Macro.escape(@schema["spec"]))

  @doc """
  The options the core reads in a round of `type` (an atom): its type's
  own and those of every round, by name, each with its `"kind"`
  (`"member_ids"`, `"member_id"`, `"rounds"` (the type has nested rounds),
  `"integer"` with `"min"`/`"max"`, `"enum"` with `"values"`, `"string"`,
  `"router"`). `own: true` gives the type's own options only.

      iex> CouncilEx.Schema.round_options(:iterate, own: true)["until"]["values"]
      ["consensus", "none"]
  """
  @spec round_options(atom, keyword) :: %{binary => map}
  def round_options(type, opts \\ []) do
    own = Map.get(own_round_options(), type, %{})

    if opts[:own],
      do: own,
      else: Map.merge(unquote(Macro.escape(@schema["round_options"]["*"])), own)
  end

  defp own_round_options,
    do:
      unquote(
        Macro.escape(
          for {type, options} <- @schema["round_options"],
              type != "*",
              into: %{},
              do: {String.to_atom(type), options}
        )
      )

  @doc """
  What the exit that ends a call to a run pid or to the service reads as
  (the C node's table, c_src/cnode/reasons.c): `:normal` (the run had
  ended) is `:noproc`, `{:nodedown, node}` is `:noconnection`; any other
  exit is itself.

      iex> CouncilEx.Schema.call_exit({:nodedown, :"n@h"})
      :noconnection
      iex> CouncilEx.Schema.call_exit({:shutdown, :x})
      {:shutdown, :x}
  """
  @spec call_exit(term) :: term
  for %{"exit" => exit, "arity" => arity, "reason" => reason} <- @schema["call_exits"] do
    exit = String.to_atom(exit)
    reason = String.to_atom(reason)

    if arity == 0 do
      def call_exit(unquote(exit)), do: unquote(reason)
    else
      def call_exit(r)
          when is_tuple(r) and tuple_size(r) == unquote(arity) and elem(r, 0) == unquote(exit),
          do: unquote(reason)
    end
  end

  def call_exit(reason), do: reason

  @doc "The keys of a spec's `limits`, as atoms."
  @spec limit_keys() :: [atom]
  def limit_keys,
    do: unquote(@schema["limits"] |> Map.keys() |> Enum.sort() |> Enum.map(&String.to_atom/1))

  @doc "The largest value a spec may give a limit."
  @spec limit_max(atom) :: non_neg_integer
  for {key, %{"max" => max}} <- @schema["limits"] do
    def limit_max(unquote(String.to_atom(key))), do: unquote(max)
  end
end
