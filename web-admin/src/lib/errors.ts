import { ApolloError } from '@apollo/client';
import type { GraphQLFormattedError } from 'graphql';

export function errorCodes(error: unknown): string[] {
  return graphQLErrors(error).map((e) => String(e.extensions?.code ?? ''));
}

export function graphQLErrors(error: unknown): readonly GraphQLFormattedError[] {
  if (error instanceof ApolloError) return error.graphQLErrors;
  return [];
}

export function hasCode(error: unknown, code: string): boolean {
  return errorCodes(error).includes(code);
}

/** A message fit for a person: the first GraphQL error, else the network failure. */
export function errorMessage(error: unknown): string {
  const gql = graphQLErrors(error);
  if (gql.length) {
    const first = gql[0]!;
    const retry = first.extensions?.retryAfter;
    if (first.extensions?.code === 'RATE_LIMITED' && retry != null) return `${first.message} (retry in ${retry}s)`;
    return first.message;
  }
  if (error instanceof ApolloError && error.networkError) return `Network error: ${error.networkError.message}`;
  if (error instanceof Error) return error.message;
  return String(error);
}
