defmodule CouncilEx.DynamicCouncil do
  @moduledoc """
  Councils defined at run time, from plain maps (atom or binary keys) or a
  JSON binary, instead of a module using the `use CouncilEx` DSL.

      iex> {:ok, spec} =
      ...>   CouncilEx.DynamicCouncil.to_spec(~s({
      ...>     "id": "triage",
      ...>     "members": [{"id": "a", "provider": "mock"}, {"id": "b", "provider": "mock"}],
      ...>     "rounds": [{"type": "independent_analysis"}, {"type": "vote"}],
      ...>     "chair": "a"
      ...>   }))
      iex> spec.id
      "dynamic:triage"

  The spec id gets the prefix `"dynamic:"` (unless it has it already); a
  missing id becomes `"dynamic:"` followed by a hash of the spec. Apart from
  the id, the same council written with the DSL and here gives equal
  `%CouncilEx.Spec{}` structs.

  Model members work the same way (`"provider": "openai"`, `"anthropic"`,
  ...; see `CouncilEx.Spec`): in JSON a key is named with
  `"api_key_env"` (a literal `"api_key"` is refused) and a tool names its
  handler; from maps, `api_key: {:system, "VAR"}` and tools whose
  `handler` is a function (an anonymous one too) are accepted:

      iex> {:ok, spec} =
      ...>   CouncilEx.DynamicCouncil.to_spec(%{
      ...>     id: "ask",
      ...>     members: [%{id: "gpt", provider: :openai, model: "gpt-4o-mini",
      ...>                 tools: [%{name: "now", handler: fn _args -> "12:00" end}]}],
      ...>     rounds: [%{type: :independent_analysis}]
      ...>   })
      iex> [tool] = hd(CouncilEx.Spec.to_map(spec)["members"])["options"]["tools"]
      iex> tool
      %{"name" => "now", "handler" => "beam"}
  """

  alias CouncilEx.Spec

  @doc """
  Builds a validated `%CouncilEx.Spec{}` from a map, a keyword list or a JSON
  binary. See `CouncilEx.Spec.new/1` for the fields. Returns `{:error,
  message}` for invalid JSON or an invalid spec.
  """
  @spec to_spec(map | keyword | binary) :: {:ok, Spec.t()} | {:error, binary}
  def to_spec(json) when is_binary(json) do
    case CouncilEx.JSON.decode(json) do
      {:ok, map} when is_map(map) -> to_spec(map)
      {:ok, other} -> {:error, "spec: JSON must be an object, got: #{inspect(other)}"}
      {:error, reason} -> {:error, "spec: invalid JSON: #{inspect(reason)}"}
    end
  end

  def to_spec(attrs) when is_list(attrs) do
    if Keyword.keyword?(attrs),
      do: to_spec(Map.new(attrs)),
      else: {:error, "spec: expected a map, keyword list or JSON binary"}
  end

  def to_spec(%Spec{} = spec), do: Spec.validate(spec)

  def to_spec(attrs) when is_map(attrs) do
    {id_key, id} =
      cond do
        Map.has_key?(attrs, :id) -> {:id, attrs[:id]}
        Map.has_key?(attrs, "id") -> {"id", attrs["id"]}
        true -> {:id, nil}
      end

    attrs = attrs |> Map.delete(:id) |> Map.delete("id")

    case dynamic_id(id, attrs) do
      {:ok, id} -> Spec.new(Map.put(attrs, id_key, id))
      error -> error
    end
  end

  def to_spec(other),
    do: {:error, "spec: expected a map, keyword list or JSON binary, got: #{inspect(other)}"}

  @doc "Like `to_spec/1`; raises `ArgumentError` on an invalid spec."
  @spec to_spec!(map | keyword | binary) :: Spec.t()
  def to_spec!(attrs) do
    case to_spec(attrs) do
      {:ok, spec} -> spec
      {:error, message} -> raise ArgumentError, "invalid council spec: " <> message
    end
  end

  defp dynamic_id(nil, attrs) do
    hash = :crypto.hash(:sha256, :erlang.term_to_binary(attrs)) |> Base.url_encode64(padding: false)
    {:ok, "dynamic:" <> binary_part(hash, 0, 16)}
  end

  defp dynamic_id("dynamic:" <> _ = id, _attrs), do: {:ok, id}
  defp dynamic_id(id, _attrs) when is_binary(id) and id != "", do: {:ok, "dynamic:" <> id}

  defp dynamic_id(id, attrs) when is_atom(id) and id not in [true, false],
    do: dynamic_id(Atom.to_string(id), attrs)

  defp dynamic_id(id, _attrs), do: {:error, "id: expected a non-empty binary, got: #{inspect(id)}"}
end
